"""Offline test world: a temporary Hugging Face cache holding tiny seeded models of the real
architectures under the real hub ids, loaded through the same calls a user makes.

HF_HOME and HF_HUB_OFFLINE are set here, before anything imports huggingface_hub; so is
TUNEJURY_ALIGN_CACHE (a fresh folder unless it is already set), where the debug reward is cached.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_HF_HOME = tempfile.mkdtemp(prefix="tunejury-test-hf-")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("HF_TOKEN", None)
# the debug reward's trained head and its training clips: built once per test session (about two
# minutes), or reused from an explicitly given cache folder (entries are keyed by a content hash)
os.environ.setdefault("TUNEJURY_ALIGN_CACHE", tempfile.mkdtemp(prefix="tunejury-test-cache-"))

import json  # noqa: E402
import shutil  # noqa: E402
import warnings  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

warnings.filterwarnings("ignore", message=r"torch\.meshgrid")

HUB = Path(_HF_HOME) / "hub"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_snapshot(repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in the temporary cache (created, with refs/main)."""
    repo = HUB / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def mert_style_config(hubert_config) -> dict:
    """A MERT ``config.json`` for a HuBERT config built from ``MERT_V1_FIELDS`` (which carries MERT's
    extra fields: deepnorm, attention_relax, ...): the config's fields plus the remote-code model type."""
    config = hubert_config.to_dict()
    config.update(model_type="mert_model", architectures=["MERTModel"],
                  auto_map={"AutoConfig": "configuration_MERT.MERTConfig", "AutoModel": "modeling_MERT.MERTModel"})
    return config


def save_head(head, path: Path, wrap: bool = False, sidecar: dict | None = None) -> Path:
    state = head.state_dict()
    torch.save({"state_dict": state} if wrap else state, path)
    if sidecar is not None:
        path.with_name(path.name + ".json").write_text(json.dumps(sidecar))
    return path


@pytest.fixture(scope="session")
def components():
    """(head, clap, mert) tiny seeded models, as the debug reward builds them."""
    from tunejury_align.reward.debug import build_debug_components

    return build_debug_components(seed=7)


@pytest.fixture(scope="session")
def hub_cache(components):
    """Writes roberta-base, lukewys/laion_clap, m-a-p/MERT-v1-330M and TuneJury/tunejury into the
    temporary cache in each library's own format; returns the cache's hub folder."""
    from tunejury_align.reward.clap import CLAP_MUSIC_CHECKPOINT, laion_training_checkpoint

    head, clap, mert = components
    # roberta-base: config + tokenizer files (CLAP's text tower weights come from the CLAP checkpoint)
    roberta = hub_snapshot("roberta-base")
    clap.text_branch.config.save_pretrained(roberta)
    clap.tokenizer.save_pretrained(roberta)
    # lukewys/laion_clap: LAION-CLAP's training checkpoint layout ({"epoch", "name", "state_dict" with
    # "module." keys, "optimizer": Adam state with numpy float64 learning rates})
    torch.save(laion_training_checkpoint(clap), hub_snapshot("lukewys/laion_clap") / CLAP_MUSIC_CHECKPOINT)
    # m-a-p/MERT-v1-330M: save_pretrained weights, MERT-style config.json, preprocessor config
    mert_dir = hub_snapshot("m-a-p/MERT-v1-330M")
    mert.model.save_pretrained(mert_dir)
    (mert_dir / "config.json").write_text(json.dumps(mert_style_config(mert.model.config)))
    (mert_dir / "preprocessor_config.json").write_text(json.dumps(
        {"do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
         "padding_side": "right", "padding_value": 0, "return_attention_mask": True, "sampling_rate": 24000}))
    # TuneJury/tunejury: the primary head (plain state_dict) and the A1 CLAP-audio-only variant
    tunejury = hub_snapshot("TuneJury/tunejury")
    save_head(head, tunejury / "tunejury.pt")
    from tunejury_align.reward.head import TuneJuryHead

    torch.manual_seed(3)
    save_head(TuneJuryHead(512).eval(), tunejury / "A1_clap_audio_only.pt", wrap=True,
              sidecar={"input_dim": 512, "exclude": ["mert", "text"]})
    return HUB


@pytest.fixture(scope="session")
def reward(hub_cache):
    """The released-layout reward loaded from hub ids, exactly as a user would."""
    from tunejury_align.reward import TuneJuryReward

    return TuneJuryReward.from_pretrained("TuneJury/tunejury")


@pytest.fixture()
def tmp_copy(tmp_path):
    def copy(src: Path, name: str | None = None) -> Path:
        dst = tmp_path / (name or src.name)
        shutil.copy(src, dst)
        return dst

    return copy


def make_clip(seconds: float, sample_rate: int, kind: str = "chord", channels: int = 2, seed: int = 0) -> torch.Tensor:
    """``(C, T)`` synthetic clip: tone, chord or noise."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    if kind == "tone":
        wave = 0.3 * torch.sin(2 * torch.pi * 440.0 * t)
    elif kind == "chord":
        wave = 0.2 * sum(torch.sin(2 * torch.pi * f * t) for f in (261.63, 329.63, 392.0))
    else:
        wave = 0.1 * torch.randn(t.shape, generator=generator)
    return torch.stack([wave * (1.0 - 0.1 * c) for c in range(channels)])


@contextmanager
def forward_calls(*modules: torch.nn.Module):
    """Counts calls of each module while the block runs: yields ``calls`` with ``calls[i]`` for
    ``modules[i]``. A forward pre-hook fires on entry, so a checkpointed recomputation in backward counts
    even when PyTorch stops it early (once it has every tensor backward needs)."""
    calls = [0] * len(modules)

    def counter(index: int):
        def hook(module, args):
            calls[index] += 1
        return hook

    handles = [module.register_forward_pre_hook(counter(i)) for i, module in enumerate(modules)]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def saved_for_backward():
    """Bytes of the tensors autograd keeps for backward from the ops run in the block (yields a one-item
    list). A non-reentrant ``torch.utils.checkpoint`` region adds only its inputs here: the ops inside it
    are packed by the checkpoint's own hooks, keep nothing, and are recomputed in backward."""
    total = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield total
