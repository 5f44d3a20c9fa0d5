"""The debug reward's head: a learned proxy of the debug world's truth, as TuneJury is of human votes.

Recipe (deterministic, seeded): each debug generator plays ``seeds_per_prompt`` clips of each of the
20 training prompts (:data:`~.world.TRAIN_PROMPTS`); the tiny CLAP + MERT encoders of the debug reward
give each clip its features; every pair of clips of one prompt is labelled by a noisy listener who
prefers A with probability ``sigmoid((truth_A - truth_B) / label_temperature)`` (with 0.05, 87 % of the
labels agree with the truth); and a head is trained on those labels with the project's own RankNet
code (:func:`tunejury_align.reward.training.train_head`). Measured on fresh clips, its pairwise
accuracy against the truth is about 0.7 (``benchmarks/debug_world.py``; ``tests/test_debug_world.py``
checks 0.62-0.80), the real model's 0.7086.

Judges (held-out heads, :mod:`tunejury_align.reward.judges`) are heads trained the same way with other
seeds and label draws, each leaving one debug generator's clips out (as TuneJury's leave-one-dataset-out
heads leave out one dataset's votes), on the quicker schedule (lr 5e-3, 1024 pairs per step, at most 40
epochs); half of them read the debug reward's features, half the features of other tiny encoders (seeded
apart: ``encoder_seed``, as TuneJury's MuQ head reads another encoder's), whose clips' features are built and
cached separately.

Building takes about 7 minutes on 2 cores (1.5 for the clips, 5 for the head; a head trained at lr 5e-3
for 40 epochs, 1.5 minutes, reaches the same pairwise accuracy but steers DITTO worse: 4 of 8 prompts
gained truth instead of 6), so the clips' features and each trained head are cached in
``$TUNEJURY_ALIGN_CACHE`` (default ``~/.cache/tunejury-align``, or under ``$XDG_CACHE_HOME``) under a
SHA-256 of the debug world's source code, library versions and settings: any change rebuilds. A file
lock keeps two processes from building the same entry at once.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..rundir import atomic_write_json, library_versions, load_tensor, save_tensor
from .truth import TRUTH_VERSION
from .world import TRAIN_PROMPTS, WorldSamples, pairwise_accuracy_vs_truth, same_prompt_pairs, world_samples

logger = logging.getLogger(__name__)

PROXY_VERSION = 1
#: the code the debug world's numbers depend on (paths relative to the package)
SOURCES = ("debug/truth.py", "debug/world.py", "debug/proxy.py", "generators/voicing.py", "generators/musicgen.py",
           "generators/stable_audio.py", "generators/audioldm2.py", "generators/base.py", "tiny_tokenizers.py",
           "reward/tiny.py", "reward/debug.py", "reward/clap.py", "reward/mert.py", "reward/head.py",
           "reward/model.py", "reward/audio.py", "reward/resample.py", "reward/training.py")


@dataclass(frozen=True)
class ProxySpec:
    """How a debug head is trained (the debug reward: the defaults; judges: other seeds)."""

    head_seed: int = 0  # initialisation, shuffling, validation split
    label_seed: int = 0  # the noisy listener's draws
    label_temperature: float = 0.05  # P(A preferred) = sigmoid((truth_A - truth_B) / label_temperature)
    sample_seed: int = 0  # clips use seeds sample_seed + 1000 * prompt + s
    seeds_per_prompt: int = 12
    same_generator_pairs: bool = False  # True: listeners only compare two clips of one generator
    lr: float = 2e-3
    train_batch_size: int = 256
    max_epochs: int = 200  # stops at epoch 137: about 5 minutes on 2 cores (see the module docstring)
    patience: int = 15
    leave_out: str | None = None  # a debug generator whose clips the head never sees (judges)
    encoder_seed: int | None = None  # None: the debug reward's encoders; else other tiny encoders (judges)

    def samples_key(self) -> dict:
        key = {"sample_seed": self.sample_seed, "seeds_per_prompt": self.seeds_per_prompt}
        return key if self.encoder_seed is None else {**key, "encoder_seed": self.encoder_seed}


def cache_dir() -> Path:
    explicit = os.environ.get("TUNEJURY_ALIGN_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "tunejury-align"


def source_digest() -> str:
    """SHA-256 of the debug world's code, the truth and proxy versions and the library versions."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(f"truth {TRUTH_VERSION} proxy {PROXY_VERSION}".encode())
    digest.update(json.dumps(library_versions("transformers", "diffusers", "numpy"), sort_keys=True).encode())
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (package / name).read_bytes())
    return digest.hexdigest()


def _entry(kind: str, settings: dict) -> Path:
    key = hashlib.sha256(json.dumps({"source": source_digest(), **settings}, sort_keys=True).encode()).hexdigest()
    return cache_dir() / f"{kind}-{key[:24]}.pt"


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the handle closes
        yield


def training_samples(features: Callable, spec: ProxySpec, progress: Callable[[str], None] | None = None) -> WorldSamples:
    """The debug generators' clips of :data:`~.world.TRAIN_PROMPTS` with features and truth (cached)."""
    path = _entry("world-samples", spec.samples_key())
    with _locked(path):
        if path.is_file():
            return WorldSamples.from_dict(load_tensor(path))
        logger.info("building the debug world's training clips (cached in %s)", path.parent)
        samples = world_samples(features, TRAIN_PROMPTS, spec.seeds_per_prompt, spec.sample_seed, progress=progress)
        save_tensor(path, samples.as_dict())
        return samples


def noisy_labels(samples: WorldSamples, pairs: torch.Tensor, spec: ProxySpec) -> torch.Tensor:
    """``(M,)`` 1 where the noisy listener prefers the pair's first clip, else 0."""
    margin = samples.truths[pairs[:, 0]] - samples.truths[pairs[:, 1]]
    draws = torch.rand(len(pairs), generator=torch.Generator().manual_seed(spec.label_seed))
    return (draws < torch.sigmoid(margin / spec.label_temperature)).float()


def train_proxy_head(samples: WorldSamples, spec: ProxySpec) -> tuple[dict[str, torch.Tensor], dict]:
    """Train a head on noisy comparisons of ``samples``; returns its state dict and a report."""
    from ..reward.training import HeadTrainingConfig, train_head

    pairs = same_prompt_pairs(samples, same_generator=spec.same_generator_pairs)
    if spec.leave_out is not None:
        if spec.leave_out not in samples.generators:
            raise ValueError(f"leave_out={spec.leave_out!r} is not one of the world's generators {sorted(set(samples.generators))}")
        kept = [samples.generators[a] != spec.leave_out and samples.generators[b] != spec.leave_out
                for a, b in pairs.tolist()]
        pairs = pairs[torch.tensor(kept, dtype=torch.bool)]
    labels = noisy_labels(samples, pairs, spec)
    config = HeadTrainingConfig(lr=spec.lr, train_batch_size=spec.train_batch_size, max_epochs=spec.max_epochs,
                                patience=spec.patience, seed=spec.head_seed)
    result = train_head(samples.features[pairs[:, 0]], samples.features[pairs[:, 1]], labels, config)
    with torch.no_grad():
        scores = result.head(samples.features)
    report = {"pairs": len(pairs), "label_agreement_with_truth": float(
        (labels.bool() == (samples.truths[pairs[:, 0]] > samples.truths[pairs[:, 1]])).float().mean()),
        "train_accuracy_vs_truth": pairwise_accuracy_vs_truth(scores, samples, pairs),
        "best_epoch": result.best_epoch, "epochs": result.epochs, "spec": dataclasses.asdict(spec)}
    return result.head.state_dict(), report


def proxy_head(features: Callable, spec: ProxySpec = ProxySpec(),
               progress: Callable[[str], None] | None = None) -> dict[str, torch.Tensor]:
    """The trained head's state dict for ``spec`` (from the cache, or trained and cached)."""
    path = _entry("proxy-head", dataclasses.asdict(spec))
    with _locked(path):
        if path.is_file():
            return load_tensor(path)
    samples = training_samples(features, spec, progress)
    with _locked(path):
        if path.is_file():
            return load_tensor(path)
        state, report = train_proxy_head(samples, spec)
        logger.info("trained the debug reward's head: %s", report)
        save_tensor(path, state)
        atomic_write_json(path.with_suffix(".json"), report)
        return state
