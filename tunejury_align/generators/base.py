"""The small surface every generator adapter exposes, the family record the registry holds, the
base of the families' fine-tuning targets, and seeding helpers.

A generator has ``sample_rate``, ``name`` (model id or ``debug-*``), ``is_debug`` and
``generate(prompts, seeds, **options) -> (B, C, T)`` float32 audio in [-1, 1] on the CPU.
Candidate i is a pure function of ``(prompts[i], seeds[i], options)``: the same seed gives the same
audio whatever the batch size or the other prompts in the batch (per-item ``torch.Generator``s,
never the global RNG).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ..rundir import library_versions

__all__ = ["CallableGenerator", "Family", "Generator", "Trainer", "check_generated", "check_request",
           "item_generators", "library_versions", "load_diffusers_pipeline", "select_trainable"]


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


# -- the registry's record of a family -----------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """One generator family, as ``generators.FAMILIES`` lists it (one line per family)."""

    name: str
    summary: str  # one line for the CLI help: the models it covers
    adapter: type  # ``from_pretrained(name, device=, dtype=)``; wraps the library's object
    debug: Callable[[], Any]  # tiny in-process model of the real architecture
    config_model_types: tuple[str, ...] = ()  # ``config.json`` "model_type" values of this family
    pipeline_classes: tuple[str, ...] = ()  # diffusers ``model_index.json`` "_class_name" values
    trainer: type | None = None  # its fine-tuning targets and loss (expert iteration), if any

    @property
    def diffusion(self) -> bool:
        """Whether the adapter has the differentiable sampler DITTO and particle steering drive."""
        return all(hasattr(self.adapter, name) for name in ("sample", "initial_noise"))


# -- fine-tuning targets (expert iteration) ------------------------------------------------------
def select_trainable(root: nn.Module, patterns: Sequence[str], untrainable: Sequence[str]) -> list[str]:
    """Names of ``root``'s parameters matching any regex in ``patterns`` (``re.search``)."""
    names = [name for name, _ in root.named_parameters()]
    chosen = [n for n in names if any(re.search(p, n) for p in patterns)]
    if not chosen:
        raise ValueError(f"trainable patterns {list(patterns)} match no parameter (names look like {names[:3]})")
    frozen = [n for n in chosen if any(re.search(p, n) for p in untrainable)]
    if frozen:
        raise ValueError(f"trainable patterns {list(patterns)} select {frozen[:3]}...: the audio codec makes the "
                         "training targets and gets no gradient; leave it out")
    return chosen


class Trainer:
    """A family's fine-tuning target: ``encode(audio) -> targets`` (once per sample, no grad),
    ``loss(targets, texts, seeds, condition_dropout) -> ()``, the parameters to train (regexes over
    ``root``'s parameter names) and ``save_pretrained``/``load_pretrained`` in the library's format.
    Random draws inside a loss come from ``torch.Generator(seed_i)`` per sample, so a sample's draws do
    not depend on the process or micro-batch it lands in."""

    family = ""
    default_trainable: tuple[str, ...] = ()
    untrainable: tuple[str, ...] = ()
    root: nn.Module
    generator: Any

    def _select(self, trainable: Sequence[str] | None) -> None:
        patterns = tuple(trainable) if trainable else self.default_trainable
        self.trainable_names = select_trainable(self.root, patterns, self.untrainable)

    def parameters_to_train(self) -> dict[str, nn.Parameter]:
        params = dict(self.root.named_parameters())
        return {name: params[name] for name in self.trainable_names}

    def train_mode(self, on: bool) -> None:
        """Training: the selected parameters require grad and their top-level modules are in train
        mode (dropout); otherwise everything is frozen and in eval mode, as the generator keeps it."""
        self.root.eval().requires_grad_(False)
        if on:
            for param in self.parameters_to_train().values():
                param.requires_grad_(True)
            tops = {name.split(".")[0] for name in self.trainable_names}
            for name, child in self.root.named_children():
                if name in tops:
                    child.train()

    @property
    def device(self) -> torch.device:
        return self.generator.device
