"""``TuneJuryReward``: the frozen, differentiable, batched TuneJury reward.

``reward(audio (B, C, T), sample_rate, prompts) -> (B,)``. Features are concatenated in the released
order ``[CLAP audio (512) | MERT (1024) | CLAP text (512)]`` (blocks a head excludes are skipped and
their encoders never loaded) and scored by the released head (Kim et al., 2026, arXiv 2606.17006).
"""

from __future__ import annotations

import hashlib
import json
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..hub import resolve_file
from .audio import centre_window, check_audio, quantize_int16, read_audio, resample, to_mono
from .clap import CLAP_REPO, CLAP_SAMPLE_RATE, CLAP_WINDOW, ClapEncoder
from .debug import DEBUG_SEED, build_debug_components
from .head import FEATURE_BLOCKS, HeadSpec, TuneJuryHead, load_head
from .mert import MERT_REPO, MertEncoder

logger = logging.getLogger(__name__)

REWARD_REPO = "TuneJury/tunejury"
REWARD_FILE = "tunejury.pt"
PROTOCOLS = ("release", "train")


@dataclass
class RewardInfo:
    """Provenance written next to every saved score."""

    reward: str
    checkpoint_sha256: str | None
    clap: str | None
    mert: str | None
    protocol: str
    debug: bool
    truth: str | None = None  # debug rewards: the truth of the world they are a proxy of

    def as_dict(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "truth" or value is not None}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class TuneJuryReward(nn.Module):
    """Frozen TuneJury reward; ``forward(audio (B, C, T), sample_rate, prompts) -> (B,)``.

    Differentiable with respect to ``audio``. ``prompts`` is a list of B strings (``""``/``None``
    means no prompt: the text block is a zero vector), a single string for all items, or ``None``.

    Protocols (deterministic):
      * ``"release"`` (default): the protocol of the published scores. CLAP sees the centre 10 s
        window at 48 kHz (shorter clips repeat-padded), int16-rounded as LAION-CLAP's loader does
        (straight-through gradient); MERT sees the whole clip at 24 kHz in 300 s segments.
      * ``"train"``: CLAP audio band-limited through 16 kHz, not int16-rounded (how the training
        features were made); MERT as above.
    """

    def __init__(self, head: TuneJuryHead, spec: HeadSpec, clap: ClapEncoder | None, mert: MertEncoder | None,
                 *, info: RewardInfo, protocol: str = "release"):
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        needs_clap = "clap_audio" in spec.blocks or "text" in spec.blocks
        if needs_clap and clap is None:
            raise ValueError(f"the head reads {spec.blocks}: a CLAP encoder is required")
        if "mert" in spec.blocks and mert is None:
            raise ValueError("the head reads the MERT block: a MERT encoder is required")
        if mert is not None and mert.hidden_size != FEATURE_BLOCKS["mert"]:
            raise ValueError(f"MERT width {mert.hidden_size} != {FEATURE_BLOCKS['mert']} expected by the head")
        self.head, self.spec, self.clap, self.mert = head, spec, clap, mert
        self.protocol = protocol
        self.info = info
        self._text_cache: dict[str, torch.Tensor] = {}
        self.eval().requires_grad_(False)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        reward: str = REWARD_REPO,
        *,
        clap: str = CLAP_REPO,
        mert: str = MERT_REPO,
        text_model: str = "roberta-base",
        protocol: str = "release",
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> TuneJuryReward:
        """Load the released reward. ``reward``: ``owner/repo`` (file ``tunejury.pt``),
        ``owner/repo/FILE.pt`` (e.g. ``TuneJury/tunejury/A1_clap_audio_only.pt``), a local ``.pt``
        file (with its optional ``<file>.json`` sidecar) or a folder holding ``tunejury.pt``.
        ``reward="debug"`` builds the tiny in-process debug reward instead."""
        if reward == "debug":
            return debug_reward(protocol=protocol, device=device, dtype=dtype)
        checkpoint = resolve_file(reward, REWARD_FILE, what="TuneJury head checkpoint")
        sidecar = None
        if not Path(reward).expanduser().exists():  # from the hub: fetch the optional sidecar too
            sidecar = _hub_sidecar(reward)
        head, spec = load_head(checkpoint, sidecar=sidecar)
        clap_encoder = None
        if "clap_audio" in spec.blocks or "text" in spec.blocks:
            clap_encoder = ClapEncoder.from_pretrained(clap, text_model=text_model)
        mert_encoder = MertEncoder.from_pretrained(mert) if "mert" in spec.blocks else None
        info = RewardInfo(reward=reward, checkpoint_sha256=sha256_file(checkpoint),
                          clap=clap if clap_encoder else None, mert=mert if mert_encoder else None,
                          protocol=protocol, debug=False)
        model = cls(head, spec, clap_encoder, mert_encoder, info=info, protocol=protocol)
        return model.to(device=device, dtype=dtype) if (device or dtype) else model

    def to(self, *args, **kwargs):  # keep the head in fp32 whatever the encoders' dtype
        super().to(*args, **kwargs)
        self.head.float()
        self._text_cache.clear()
        return self

    def __getstate__(self):  # the judges' feature cache holds a weak reference: not pickled
        return {k: v for k, v in self.__dict__.items() if k != "_last_audio"}

    @property
    def is_debug(self) -> bool:
        return self.info.debug

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    def train(self, mode: bool = True):  # frozen: always eval (no dropout, BatchNorm running stats)
        return super().train(False)

    # -- features --------------------------------------------------------------------------
    def text_embeddings(self, prompts: Sequence[str | None]) -> torch.Tensor:
        """``(N,)`` prompts -> ``(N, 512)``; empty/None prompts give zeros; embeddings are cached."""
        missing = sorted({p for p in prompts if p and p not in self._text_cache})
        if missing:  # plain tensors even under inference mode: the cache may later meet autograd (DITTO)
            with torch.inference_mode(False), torch.no_grad():
                embedded = self.clap.embed_text(missing).float()
            self._text_cache.update({p: e for p, e in zip(missing, embedded)})
        zeros = torch.zeros(FEATURE_BLOCKS["text"], device=self.device)
        return torch.stack([self._text_cache[p] if p else zeros for p in prompts])

    def clap_window(self, mono: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``(B, T)`` at ``sample_rate`` -> ``(B, 480000)`` at 48 kHz per the protocol."""
        if self.protocol == "train":
            mono = resample(resample(mono, sample_rate, 16_000), 16_000, CLAP_SAMPLE_RATE)
            return centre_window(mono, CLAP_WINDOW)
        wave = resample(mono, sample_rate, CLAP_SAMPLE_RATE)
        if wave.shape[-1] > CLAP_WINDOW:
            return quantize_int16(centre_window(wave, CLAP_WINDOW))
        # rounding is elementwise, so rounding the clip before LAION-CLAP's repeat-pad gives the same window
        # (the padding zeros round to zero) for a fraction of the work
        return centre_window(quantize_int16(wave), CLAP_WINDOW)

    def audio_blocks(self, audio: torch.Tensor, sample_rate: int, blocks: Sequence[str]) -> dict[str, torch.Tensor]:
        """``{block: (B, width)}`` float32 for the audio blocks named (``clap_audio``, ``mert``), one encoder pass
        each. The values are also kept (detached) for :meth:`cached_audio_blocks`."""
        return self._encode(check_audio(audio, sample_rate), sample_rate, blocks)

    def _encode(self, audio: torch.Tensor, sample_rate: int, blocks: Sequence[str], keep: dict | None = None):
        mono = to_mono(audio.to(self.device, torch.float32))
        out = {}
        for block in blocks:
            if block == "clap_audio":
                out[block] = self.clap.embed_audio(self.clap_window(mono, sample_rate)).float()
            elif block == "mert":
                out[block] = self.mert(resample(mono, sample_rate, MertEncoder.sample_rate)).float()
        kept = {**(keep or {}), **{k: v.detach() for k, v in out.items()}}
        self._last_audio = (weakref.ref(audio), _version(audio), sample_rate, kept)
        return out

    def cached_audio_blocks(self, audio: torch.Tensor, sample_rate: int, blocks: Sequence[str]) -> dict[str, torch.Tensor]:
        """The audio blocks (detached) of the last :meth:`features` / :meth:`audio_blocks` call when it was given
        this very tensor (the same object, unchanged since), without running an encoder again; blocks that call
        did not compute are computed now. Judges read the reward's features through this: one encoder pass per
        clip, whatever the number of judges."""
        ref, version, rate, cached = getattr(self, "_last_audio", None) or (None, None, None, {})
        if not _same_tensor(ref() if ref is not None else None, audio) or version != _version(audio) or rate != sample_rate:
            cached = {}
        missing = [b for b in blocks if b not in cached]
        if missing:
            fresh = self._encode(check_audio(audio, sample_rate), sample_rate, missing, keep=cached)
            cached = {**cached, **{k: v.detach() for k, v in fresh.items()}}
        return {b: cached[b] for b in blocks}

    def features(self, audio: torch.Tensor, sample_rate: int, prompts=None) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, input_dim)`` head input (float32)."""
        audio_in, audio = audio, check_audio(audio, sample_rate)
        prompts = normalise_prompts(prompts, audio.shape[0])
        encoded = self._encode(audio_in, sample_rate, [b for b in self.spec.blocks if b != "text"])
        return torch.cat([encoded[b] if b != "text" else self.text_embeddings(prompts) for b in self.spec.blocks], dim=-1)

    def forward(self, audio: torch.Tensor, sample_rate: int, prompts=None) -> torch.Tensor:
        """``audio (B, C, T)`` float in [-1, 1] at ``sample_rate`` -> rewards ``(B,)`` (float32)."""
        return self.head(self.features(audio, sample_rate, prompts))

    # -- files -------------------------------------------------------------------------------
    @torch.no_grad()
    def score_files(self, paths: Sequence[str | Path], prompts=None) -> list[float]:
        """Score audio files (one at a time, no gradients): the same numbers as ``forward`` on the
        decoded waveform. Raises :class:`~tunejury_align.reward.audio.AudioError` for a bad file."""
        prompts = normalise_prompts(prompts, len(paths))
        scores = []
        for path, prompt in zip(paths, prompts):
            wave, sample_rate = read_audio(path)
            scores.append(float(self(wave.unsqueeze(0), sample_rate, [prompt])[0]))
        return scores


def _version(tensor: torch.Tensor) -> int | None:
    """The tensor's in-place change counter (inference tensors have none: they cannot change outside inference
    mode)."""
    return None if tensor.is_inference() else tensor._version


def _same_tensor(kept: torch.Tensor | None, audio: torch.Tensor) -> bool:
    """``audio`` is ``kept`` or a view of all of it (``kept.detach()``): while ``kept`` lives, nothing else can
    hold its memory, and a view shares its version counter (an in-place change shows)."""
    if kept is None:
        return False
    return kept is audio or (kept.data_ptr() == audio.data_ptr() and kept.shape == audio.shape
                             and kept.stride() == audio.stride() and kept.dtype == audio.dtype
                             and kept.device == audio.device)


def _hub_sidecar(reward: str) -> dict | None:
    """``<file>.json`` (or ``<stem>.json``) beside a hub checkpoint, if the repo has one."""
    from ..hub import hub_file, split_hub_path

    repo_id, filename = split_hub_path(reward, REWARD_FILE)
    stem = filename[: -len(".pt")] if filename.endswith(".pt") else filename
    for candidate in (filename + ".json", stem + ".json"):
        path = hub_file(repo_id, candidate, what="head sidecar", optional=True)
        if path is not None:
            return json.loads(path.read_text())
    return None


def normalise_prompts(prompts, batch: int) -> list[str]:
    if prompts is None or isinstance(prompts, str):
        return [prompts or ""] * batch
    prompts = ["" if p is None else str(p) for p in prompts]
    if len(prompts) != batch:
        raise ValueError(f"got {len(prompts)} prompts for a batch of {batch} clips; pass one per clip "
                         "(or a single string for all)")
    return prompts


def debug_reward(protocol: str = "release", device=None, dtype=None, seed: int = DEBUG_SEED, proxy=None,
                 progress=None, truth=None) -> TuneJuryReward:
    """The ``debug`` reward: the debug world's learned proxy of its truth (:mod:`tunejury_align.debug`).

    Tiny seeded CLAP + MERT of the real architectures (:mod:`.debug`) and a head trained on noisy comparisons of
    the debug generators' clips by ``truth`` (a callable ``truth(audio (B, C, T), sample_rate, prompts) -> (B,)``,
    a shipped truth's name, ``"package.module:function"``, or ``None``: the shipped default;
    :mod:`tunejury_align.debug.proxy`; ``proxy`` a ``ProxySpec``, default: the debug reward's; judges use other
    seeds, some other encoders: ``encoder_seed``, which ``seed`` must then equal or leave at its default). The
    reward keeps its truth as ``world_truth`` (the judges of :func:`~.judges.load_judges` ``("debug", reward)``
    learn the same one). Offline; the first call builds and caches the head (under a minute on 2 cores),
    later calls load it; ``progress(phase, advance, total, note)`` reports the build."""
    from ..debug.proxy import ProxySpec, build_heads  # the debug world builds on this package
    from ..debug.worlds import resolve_truth

    world_truth = resolve_truth(truth)
    spec = proxy if proxy is not None else ProxySpec(encoder_seed=None if seed == DEBUG_SEED else seed)
    if proxy is not None and seed != DEBUG_SEED and spec.encoder_seed != seed:
        raise ValueError(f"seed={seed} and proxy.encoder_seed={spec.encoder_seed} disagree: give the encoders' seed "
                         "as proxy.encoder_seed")
    reward = debug_encoders(spec.encoder_seed, protocol="release", truth=world_truth,
                            name="debug" if proxy is None else f"debug-judge-{spec.head_seed}-{spec.label_seed}")
    state = build_heads(world_truth, {reward.info.reward: spec}, {spec.encoder_seed: lambda: reward.features},
                        progress)[reward.info.reward]
    reward.head.load_state_dict(state)  # trained on release features
    reward.protocol = protocol
    return reward.to(device=device, dtype=dtype) if (device or dtype) else reward


def debug_encoders(encoder_seed: int | None = None, *, protocol: str = "release", truth=None,
                   name: str = "debug") -> TuneJuryReward:
    """A debug reward's tiny encoders (``encoder_seed``: ``None`` for the debug reward's own, else a judge's) with
    an untrained head, in float32 on the CPU: what the debug world's features are computed with."""
    from ..debug.worlds import resolve_truth, truth_label

    world_truth = resolve_truth(truth)
    head, clap, mert = build_debug_components(DEBUG_SEED if encoder_seed is None else encoder_seed)
    encoders = "debug" if encoder_seed is None else f"debug-seed{encoder_seed}"
    info = RewardInfo(reward=name, checkpoint_sha256=None, clap=encoders, mert=encoders, protocol=protocol, debug=True,
                      truth=truth_label(world_truth))
    reward = TuneJuryReward(head, HeadSpec(()), clap, mert, info=info, protocol=protocol)
    reward.world_truth = world_truth
    return reward
