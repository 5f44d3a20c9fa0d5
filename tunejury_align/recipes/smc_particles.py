"""The particle machinery of Feynman-Kac steering (Singhal et al., 2025, arXiv 2501.06848): potentials,
effective sample size, systematic resampling, and the hook the diffusion adapters' samplers call.

:class:`Steering` is what ``StableAudioGenerator.sample`` and ``AudioLDM2Generator.sample`` take as
``steering=``. Before the loop it installs per-particle noise on the sampler's fresh scheduler; after every
step it hands the step's x0 prediction to a callback (the recipe: decode, score, weigh) and, when the callback
resamples, reorders the latents and every per-item piece of scheduler state with the ancestors.

Per-particle noise, seeded. Particle k's noise stream is the plain sampler's for seed ``base_seed + k``:

* Stable Audio (``CosineDPMSolverMultistepScheduler``, an SDE): one ``BrownianTreeNoiseSampler`` per particle,
  seeded as the scheduler seeds its own per-item trees from a list of generators, so with no resampling a
  particle is bit for bit the plain sampler's candidate;
* AudioLDM2 (``DDIMScheduler``): DDIM with ``eta > 0`` and per-particle ``variance_noise`` drawn from a
  ``torch.Generator`` per particle (``eta = 0``: the plain, deterministic sampler; copies then stay equal).

Resampling keeps each surviving particle in its own slot with its own noise stream; only the extra copies
move into the freed slots, and each extra copy gets a fresh stream seeded by (slot seed, step) so copies
diverge. Resampling with equal weights is therefore the identity: with lambda = 0 the final particles are
exactly best-of-K's candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

POTENTIALS = ("difference", "max", "sum")


def log_potential(kind: str, history: np.ndarray, temperature: float) -> np.ndarray:
    """The log FK potential of each particle at the latest scoring step, from its line's rewards ``history``
    ``(K, s)`` (oldest first; columns inherited through resampling): ``difference`` lambda (r_s - r_{s-1})
    (r_0 = 0, so the product telescopes to exp(lambda r_final)), ``max`` lambda max_j r_j, ``sum`` lambda sum_j r_j."""
    if kind == "difference":
        previous = history[:, -2] if history.shape[1] > 1 else np.zeros(len(history))
        value = history[:, -1] - previous
    elif kind == "max":
        value = history.max(axis=1)
    elif kind == "sum":
        value = history.sum(axis=1)
    else:
        raise ValueError(f"potential must be one of {POTENTIALS}, got {kind!r}")
    return temperature * value


def effective_sample_size(log_weights: np.ndarray) -> float:
    """``(sum w)^2 / sum w^2`` of unnormalised log weights: K for equal weights, 1 for one dominant particle."""
    w = np.exp(log_weights - log_weights.max())
    return float(w.sum() ** 2 / (w ** 2).sum())


def systematic_counts(log_weights: np.ndarray, uniform: float) -> np.ndarray:
    """Copies of each particle under systematic resampling with offset ``uniform`` in [0, 1). Equal weights give
    one copy each (exactly, whatever the rounding)."""
    k = len(log_weights)
    if np.all(log_weights == log_weights[0]):
        return np.ones(k, dtype=np.int64)
    w = np.exp(log_weights - log_weights.max())
    cumulative = np.cumsum(w / w.sum())
    picks = np.searchsorted(cumulative, (np.arange(k) + uniform) / k, side="right").clip(max=k - 1)
    return np.bincount(picks, minlength=k)


def assign_slots(counts: np.ndarray) -> tuple[np.ndarray, list[bool]]:
    """Copies per particle -> ``(ancestors (K,), fresh (K,))``: a particle that survives stays in its own slot;
    its extra copies fill the slots of the particles that died, in order, and are ``fresh`` (new noise)."""
    k = len(counts)
    ancestors, fresh = np.arange(k), [False] * k
    extras = [j for j in range(k) for _ in range(int(counts[j]) - 1)]
    for slot, parent in zip([j for j in range(k) if counts[j] == 0], extras):
        ancestors[slot], fresh[slot] = parent, True
    return ancestors, fresh


def fresh_seed(slot_seed: int, step: int) -> int:
    """The noise seed of a copy made at ``step`` in the slot of seed ``slot_seed`` (63 bits)."""
    return int(np.random.SeedSequence([int(slot_seed) & (2**63 - 1), int(step)]).generate_state(1, np.uint64)[0]) >> 1


class BrownianParticleNoise:
    """The SDE noise of ``CosineDPMSolverMultistepScheduler``, one Brownian tree per particle: called as the
    scheduler calls its ``noise_sampler``, ``(sigma, sigma_next) -> (K, C, L)``."""

    def __init__(self, like: torch.Tensor, sigma_min: float, sigma_max: float, seeds: Sequence[int]):
        self.like, self.sigma_min, self.sigma_max = like[:1], sigma_min, sigma_max
        self.samplers = [self._sampler(seed) for seed in seeds]

    def _sampler(self, seed: int):
        from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

        # a one-item list of seeds, as the scheduler's own batched trees: the same path as its item
        return BrownianTreeNoiseSampler(self.like, sigma_min=self.sigma_min, sigma_max=self.sigma_max, seed=[seed])

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        return torch.cat([sampler(sigma, sigma_next) for sampler in self.samplers])

    def reorder(self, ancestors: np.ndarray, seeds: dict[int, int]) -> None:
        self.samplers = [self._sampler(seeds[slot]) if slot in seeds else self.samplers[a]
                         for slot, a in enumerate(ancestors)]


class GeneratorParticleNoise:
    """DDIM's ``variance_noise``: ``(K, ...)`` standard normal, particle k from its own ``torch.Generator``."""

    def __init__(self, seeds: Sequence[int]):
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]

    def draw(self, latents: torch.Tensor) -> torch.Tensor:
        noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in self.generators])
        return noise.to(device=latents.device, dtype=latents.dtype)

    def reorder(self, ancestors: np.ndarray, seeds: dict[int, int]) -> None:
        self.generators = [torch.Generator().manual_seed(seeds[slot]) if slot in seeds else self.generators[a]
                           for slot, a in enumerate(ancestors)]


class Steering:
    """The sampler hook. ``on_x0(step, x0) -> None | (ancestors (K,), {slot: new noise seed})`` sees each step's
    x0 prediction ``(K, ...)`` and decides; this object applies the decision to the latents, the scheduler's
    per-item history and the particles' noise. ``eta``: DDIM's (AudioLDM2), ignored by Stable Audio's SDE."""

    def __init__(self, noise_seeds: Sequence[int], on_x0: Callable, eta: float = 0.0):
        self.noise_seeds, self.on_x0, self.eta = [int(s) for s in noise_seeds], on_x0, float(eta)
        self.step_index, self.noise = 0, None

    def start(self, scheduler, latents: torch.Tensor) -> None:
        from diffusers import CosineDPMSolverMultistepScheduler, DDIMScheduler

        if len(latents) != len(self.noise_seeds):
            raise ValueError(f"{len(latents)} particles but {len(self.noise_seeds)} noise seeds")
        if isinstance(scheduler, CosineDPMSolverMultistepScheduler):
            self.noise = BrownianParticleNoise(latents, scheduler.config.sigma_min, scheduler.config.sigma_max,
                                               self.noise_seeds)
            scheduler.noise_sampler = self.noise  # the scheduler draws its SDE noise from it (attribute it owns)
        elif isinstance(scheduler, DDIMScheduler):
            self.noise = GeneratorParticleNoise(self.noise_seeds)
        else:
            raise TypeError(f"particle steering runs on CosineDPMSolverMultistepScheduler (Stable Audio) or "
                            f"DDIMScheduler (AudioLDM2), not {type(scheduler).__name__}")
        self.step_index = 0

    def ddim_noise(self, latents: torch.Tensor) -> tuple[float, torch.Tensor | None]:
        return (self.eta, self.noise.draw(latents)) if self.eta > 0 else (0.0, None)

    def step(self, latents: torch.Tensor, x0: torch.Tensor, scheduler) -> torch.Tensor:
        decision = self.on_x0(self.step_index, x0)
        self.step_index += 1
        if decision is None:
            return latents
        ancestors, seeds = decision
        index = torch.as_tensor(np.asarray(ancestors), device=latents.device)
        if hasattr(scheduler, "model_outputs"):  # multistep solvers: the previous x0 predictions, per item
            scheduler.model_outputs = [None if m is None else m[index] for m in scheduler.model_outputs]
        self.noise.reorder(np.asarray(ancestors), seeds)
        return latents[index]
