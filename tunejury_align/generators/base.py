"""The small surface every generator adapter exposes, and seeding helpers.

A generator has ``sample_rate``, ``name`` (model id or ``debug-*``), ``is_debug`` and
``generate(prompts, seeds, **options) -> (B, C, T)`` float32 audio in [-1, 1] on the CPU.
Candidate i is a pure function of ``(prompts[i], seeds[i], options)``: the same seed gives the same
audio whatever the batch size or the other prompts in the batch (per-item ``torch.Generator``s,
never the global RNG).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Generator(Protocol):
    sample_rate: int
    name: str
    is_debug: bool

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], **options) -> torch.Tensor:
        """``(B,)`` prompts and seeds -> ``(B, C, T)`` float32 audio in [-1, 1]."""
        ...

    def info(self) -> dict:
        """Provenance: model id, library versions, debug flag."""
        ...


def item_generators(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One ``torch.Generator`` per batch item, seeded with its own seed."""
    return [torch.Generator(device=torch.device(device)).manual_seed(int(seed)) for seed in seeds]


def check_request(prompts: Sequence[str], seeds: Sequence[int]) -> tuple[list[str], list[int]]:
    prompts, seeds = list(prompts), [int(s) for s in seeds]
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts and {len(seeds)} seeds; pass one seed per prompt")
    if not prompts:
        raise ValueError("nothing to generate: empty prompt list")
    return prompts, seeds


def load_diffusers_pipeline(pipeline_class, name: str, label: str, dtype=None):
    """``pipeline_class.from_pretrained(name)`` for a hub id or local folder; anything that cannot be
    found becomes a :class:`~tunejury_align.hub.ModelNotFoundError` naming the model and the fix."""
    from pathlib import Path

    from ..hub import ModelNotFoundError, looks_like_repo_id

    name = str(name)
    hint = (f"On a machine with network run `huggingface-cli download {name}`, or pass a local folder "
            "saved with save_pretrained.")
    # diffusers raises ValueError (not OSError) for a missing local path: check it first
    if not Path(name).expanduser().is_dir() and not looks_like_repo_id(name):
        raise ModelNotFoundError(f"{label} '{name}' not found: no such folder, and not a hub id. {hint}")
    try:
        return pipeline_class.from_pretrained(name, torch_dtype=dtype)
    except OSError as err:
        raise ModelNotFoundError(f"{label} '{name}' not found: {err}. {hint}") from err


def library_versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("torch", *names):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class CallableGenerator:
    """Wraps any ``generate(prompts, seeds) -> (B, C, T)`` callable (a user's own model, an
    audiocraft model, ...) into a generator. The callable must honour the seeds itself."""

    fn: Callable[[list[str], list[int]], torch.Tensor]
    sample_rate: int
    name: str = "callable"
    is_debug: bool = False
    extra_info: dict = field(default_factory=dict)

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], **options) -> torch.Tensor:
        prompts, seeds = check_request(prompts, seeds)
        audio = self.fn(prompts, seeds, **options)
        return check_generated(audio, len(prompts), self.name)

    def info(self) -> dict:
        return {"generator": self.name, "debug": self.is_debug, **self.extra_info,
                "versions": library_versions()}


def check_generated(audio, batch: int, name: str) -> torch.Tensor:
    """Validate what a generator returned: ``(B, C, T)`` float, finite."""
    if not isinstance(audio, torch.Tensor):
        raise TypeError(f"generator '{name}' returned {type(audio).__name__}, expected a (B, C, T) tensor")
    if audio.ndim == 2:
        audio = audio.unsqueeze(1)
    if audio.ndim != 3 or audio.shape[0] != batch:
        raise ValueError(f"generator '{name}' returned shape {tuple(audio.shape)}, expected ({batch}, C, T)")
    audio = audio.detach().float().cpu()
    if not torch.isfinite(audio).all():
        raise ValueError(f"generator '{name}' produced NaN/Inf audio")
    return audio
