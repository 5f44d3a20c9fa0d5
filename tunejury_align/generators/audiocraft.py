"""Wrap an audiocraft ``MusicGen`` (or any model with its surface) the user already holds.

audiocraft is not a dependency (1.3.0 pins torch 2.1); nothing here imports it. The documented
surface used: ``model.sample_rate``, ``model.set_generation_params(**params)`` and
``model.generate(descriptions) -> (B, C, T)``. audiocraft samples with torch's global RNG, so for
per-candidate seeding each candidate is generated alone under ``torch.manual_seed(seed)`` inside a
forked RNG (the caller's RNG state is restored afterwards): candidate i depends on (prompt i, seed i)
only, at the cost of batch size 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import check_generated, check_request, library_versions


class AudiocraftGenerator:
    family = "audiocraft"

    def __init__(self, model, name: str = "audiocraft-musicgen", generation_params: dict | None = None):
        for attribute in ("sample_rate", "set_generation_params", "generate"):
            if not hasattr(model, attribute):
                raise TypeError(f"{type(model).__name__} lacks '{attribute}': not an audiocraft-style model")
        self.model = model
        self.name = name
        self.is_debug = False
        self.sample_rate = int(model.sample_rate)
        self.generation_params = dict(generation_params or {})

    def info(self) -> dict:
        return {"generator": self.name, "family": self.family, "debug": False,
                "generation_params": self.generation_params, "versions": library_versions("audiocraft")}

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seeds: Sequence[int], **params) -> torch.Tensor:
        """``(B,)`` prompts/seeds -> ``(B, C, T)``; ``params`` go to ``set_generation_params``."""
        prompts, seeds = check_request(prompts, seeds)
        self.model.set_generation_params(**{**self.generation_params, **params})
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        clips = []
        for prompt, seed in zip(prompts, seeds):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                clips.append(check_generated(self.model.generate([prompt]), 1, self.name))
        length = min(c.shape[-1] for c in clips)
        return torch.cat([c[..., :length] for c in clips])
