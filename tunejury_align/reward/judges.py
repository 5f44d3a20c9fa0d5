"""Held-out judges: other TuneJury heads that score a run's audio beside the reward it optimises.

A judge is a head over the same CLAP + MERT features as the reward (TuneJury's sibling heads: the
leave-one-dataset-out heads ``tunejury_leave_MA.pt``, ``tunejury_leave_MP.pt``, ... and the input
ablations), so scoring with five judges costs five small MLPs, not five more encoder passes: judges read
the reward's own features of the same clips (:meth:`TuneJuryReward.cached_audio_blocks`).

Judges on the reward's features cannot see past them: an optimiser that climbs the reward by gradient
moves those features, and every head that reads them tends to climb too (the debug world's strong DITTO
run: the reward +3.0, the truth -0.01, these judges +1.3). A judge with its own encoders (``model``: a
whole reward, one more encoder pass per clip) is not on the optimiser's path (the same run: -0.8). The
debug world has both kinds; for the released model the encoder-swap head is ``tunejury_muq_leave_MA.pt``,
over MuQ-MuLan, which this toolkit does not load yet.

Specs (``--judges SPEC,...``):

* ``owner/repo/FILE.pt``: a head on the Hugging Face hub (with its ``FILE.pt.json`` sidecar if the repo has
  one); ``owner/repo`` alone means ``tunejury.pt``.
* a local ``.pt`` file (sidecar ``<file>.json`` beside it), or a folder: every ``*.pt`` head in it (the
  TuneJury repository ships its sibling heads under ``checkpoints/``).
* ``debug``: the debug world's judges (:data:`DEBUG_JUDGES`), for the ``debug`` reward only; ``debug:NAME``
  one of them.

A judge whose head reads a block the reward does not load an encoder for (e.g. a MERT-reading judge beside
the CLAP-only ablation reward) is refused with a message that says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .head import CheckpointError, HeadSpec, TuneJuryHead, load_head, load_state_dict_safely

logger = logging.getLogger(__name__)

#: judge scores are recorded beside the reward under these names (``judge_<name>``)
JUDGE_PREFIX = "judge_"
#: the debug world's judges: heads trained like the debug reward, with its schedule, on other head and label seeds,
#: each leaving one of the world's three listener panels out (a panel compared a third of the training prompts:
#: :mod:`tunejury_align.debug.proxy`), as TuneJury's leave-one-dataset-out heads each leave one dataset of votes
#: out; the three ``debug-alt-*`` ones read one other set of tiny encoders of the same architectures, seeded apart
#: (``encoder_seed``), as TuneJury's MuQ head reads MuQ-MuLan's features instead of CLAP + MERT: one encoder
#: pass serves all three
ALT_ENCODER_SEED = 101
DEBUG_JUDGES = {
    "debug-leave-a": dict(head_seed=1, label_seed=1, leave_out="a"),
    "debug-leave-b": dict(head_seed=2, label_seed=2, leave_out="b"),
    "debug-leave-c": dict(head_seed=3, label_seed=3, leave_out="c"),
    "debug-alt-leave-a": dict(head_seed=101, label_seed=101, leave_out="a", encoder_seed=ALT_ENCODER_SEED),
    "debug-alt-leave-b": dict(head_seed=102, label_seed=102, leave_out="b", encoder_seed=ALT_ENCODER_SEED),
    "debug-alt-leave-c": dict(head_seed=103, label_seed=103, leave_out="c", encoder_seed=ALT_ENCODER_SEED),
}


class JudgeError(ValueError):
    """A judge that cannot be used beside this reward; the message says why and what to do."""


@dataclass
class Judge:
    """One held-out head: its name (the file stem, or the debug judge's name), weights and input blocks."""

    name: str
    head: TuneJuryHead
    spec: HeadSpec
    source: str
    # the encoders it reads when they are not the reward's: a TuneJuryReward whose features feed this judge's head
    # (shared by the judges that read the same encoders, so one encoder pass serves them); None: the reward's
    model: Callable | None = None

    @property
    def own_encoders(self) -> bool:
        return self.model is not None

    def info(self) -> dict:
        encoders = "reward" if self.model is None else f"own ({self.model.info.clap} / {self.model.info.mert})"
        return {"name": self.name, "source": self.source, "blocks": list(self.spec.blocks), "encoders": encoders}


def debug_judge_spec(name: str):
    from ..debug.proxy import ProxySpec

    if name not in DEBUG_JUDGES:
        raise JudgeError(f"unknown debug judge {name!r}; the debug judges are {sorted(DEBUG_JUDGES)}")
    return ProxySpec(**DEBUG_JUDGES[name])


def _debug_judges(names: Sequence[str], reward, progress=None) -> list[Judge]:
    """The debug judges ``names``, learned from the truth of ``reward``'s world (built together: each debug
    generator's clips are generated once for all the encoder sets the missing judges read)."""
    info = getattr(reward, "info", None)
    if info is None or info.clap != "debug" or info.mert != "debug" or not hasattr(reward, "world_truth"):
        raise JudgeError("debug judges read the debug reward's tiny encoders: use them with --reward debug, or give "
                         "real judge heads (owner/repo/FILE.pt, a local .pt file or a folder of them)")
    from ..debug.proxy import build_heads
    from .model import debug_encoders
    from .tiny import seeded

    truth = reward.world_truth
    specs = {name: debug_judge_spec(name) for name in names}
    models = {spec.encoder_seed: debug_encoders(spec.encoder_seed, truth=truth, name=f"debug-seed{spec.encoder_seed}")
              for spec in specs.values() if spec.encoder_seed is not None}
    encoders = {None: lambda: debug_encoders(None, truth=truth).features,  # float32, whatever the reward's dtype
                **{seed: (lambda model=model: model.features) for seed, model in models.items()}}
    states = build_heads(truth, specs, encoders, progress)
    judges = []
    for name, spec in specs.items():
        model = models.get(spec.encoder_seed)
        with seeded(0):  # the weights are loaded next; the caller's RNG stays untouched
            head = TuneJuryHead(HeadSpec(()).input_dim)
        head.load_state_dict(states[name])
        judges.append(Judge(name, head.eval(), HeadSpec(()), f"debug:{name}", model=model))
    return judges


def _file_judge(source: str) -> Judge:
    from ..hub import resolve_file
    from .model import REWARD_FILE, _hub_sidecar

    checkpoint = resolve_file(source, REWARD_FILE, what="judge head checkpoint")
    sidecar = None if Path(source).expanduser().exists() else _hub_sidecar(source)
    try:
        head, spec = load_head(checkpoint, sidecar=sidecar)
    except CheckpointError as err:
        if any(key.startswith("score.") for key in load_state_dict_safely(Path(checkpoint))):
            raise JudgeError(f"{source} is TuneJury's MuQ encoder-swap head (keys score.*: an MLP over MuQ-MuLan-large "
                             "features, not CLAP + MERT); this toolkit does not load MuQ-MuLan, so it cannot run "
                             "this judge: use the CLAP + MERT sibling heads") from err
        raise
    return Judge(Path(checkpoint).stem, head, spec, source)


def parse_judges(specs: str | Sequence[str] | None) -> list[str]:
    """``"a,b"`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]`` (empty entries dropped)."""
    if not specs:
        return []
    items = [specs] if isinstance(specs, str) else list(specs)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def load_judges(specs: str | Sequence[str] | None, reward, device=None, progress=None) -> list[Judge]:
    """The judges named by ``specs`` (see the module docstring), checked against ``reward``'s encoders and
    moved to its device. ``progress(phase, advance, total, note)`` reports the debug judges' build."""
    judges: list[Judge] = []
    for spec in parse_judges(specs):
        if spec == "debug" or spec.startswith("debug:"):
            judges += _debug_judges(list(DEBUG_JUDGES) if spec == "debug" else [spec[len("debug:"):]], reward,
                                    progress)
            continue
        path = Path(spec).expanduser()
        if path.is_dir() and not (path / "tunejury.pt").is_file():
            files = sorted(path.glob("*.pt"))
            if not files:
                raise JudgeError(f"judge folder {path} holds no .pt head checkpoints")
            judges += [_file_judge(str(f)) for f in files]
        else:
            judges.append(_file_judge(spec))
    names = [j.name for j in judges]
    if len(set(names)) != len(names):
        raise JudgeError(f"judges with the same name {sorted({n for n in names if names.count(n) > 1})}: each judge "
                         "is recorded under its file stem, so give distinct files")
    for judge in judges:
        check_judge(judge, reward)
        for target in (judge.head, judge.model):
            if target is not None:
                target.to(device or _device_of(reward)).float().eval().requires_grad_(False)
    return judges


def _device_of(reward) -> torch.device:
    try:
        return next(reward.head.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def check_judge(judge: Judge, reward) -> None:
    """Refuse a judge that needs an encoder ``reward`` does not load, or a reward without features."""
    if judge.model is not None:
        return  # its own encoders
    if not hasattr(reward, "cached_audio_blocks"):
        raise JudgeError(f"judge {judge.name} reads TuneJury features: the reward must be a TuneJuryReward "
                         f"(--reward), not {type(reward).__name__}")
    encoders = {"clap_audio": reward.clap, "text": reward.clap, "mert": reward.mert}
    for block in judge.spec.blocks:
        if encoders[block] is None:
            which = "MERT" if block == "mert" else "CLAP"
            raise JudgeError(f"judge {judge.name} ({judge.source}) reads the {block} block, but the reward "
                             f"{reward.info.reward} does not load {which}: pick a reward that reads {block}, or "
                             f"drop this judge")


def judge_scorers(reward, judges: Sequence[Judge]) -> dict[str, Callable]:
    """``{"judge_<name>": fn(audio, sample_rate, prompts) -> (B,)}``: scorers the recipes record beside the
    reward. Called right after the reward on the same audio tensor, they reuse its features (no encoder
    pass); on other audio they compute them once for all the judges. A judge with its own encoders runs them,
    once per call for all the judges that share them (the first computes, the others reuse its features)."""
    def make(judge: Judge) -> Callable:
        def score(audio, sample_rate, prompts):
            source = reward if judge.model is None else judge.model
            if judge.model is None and not hasattr(reward, "cached_audio_blocks"):
                raise JudgeError(f"judge {judge.name} reads TuneJury features: the reward must be a TuneJuryReward")
            with torch.no_grad():
                blocks = source.cached_audio_blocks(audio, sample_rate, [b for b in judge.spec.blocks if b != "text"])
                texts = source.text_embeddings(list(prompts)) if "text" in judge.spec.blocks else None
                features = torch.cat([blocks[b] if b != "text" else texts for b in judge.spec.blocks], dim=-1)
                return judge.head(features.to(next(judge.head.parameters()).device)).float()
        return score

    return {JUDGE_PREFIX + judge.name: make(judge) for judge in judges}


def judge_names(extras: dict) -> list[str]:
    """The judge entries of a recipe's extra scores, in order."""
    return [name for name in extras if name.startswith(JUDGE_PREFIX)]


def judges_mean(extras: dict[str, np.ndarray]) -> np.ndarray | None:
    """The judges' mean score (same shape as each entry) or ``None`` without judges."""
    names = judge_names(extras)
    return np.mean([np.asarray(extras[n], dtype=np.float64) for n in names], axis=0) if names else None
