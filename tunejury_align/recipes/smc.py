"""Particle steering of the diffusion generators: Feynman-Kac steering (Singhal et al., 2025, arXiv
2501.06848; sequential Monte Carlo as in DAS, Kim et al., ICLR 2025) with a reward.

K particles per prompt run the adapter's own sampler together (particle k starts from best-of-N candidate k's
noise, seed ``base_seed + k``, and keeps that seed's sampler noise). Every ``resample_every`` steps each
particle's x0 prediction (the sampler's own clean-sample estimate) is decoded and scored and the particles are
weighed by FK potentials of their line's rewards (``potential``: ``difference`` r_t - r_t-1, ``max`` or ``sum``;
times lambda = ``temperature``). Difference potentials multiply since the last resampling (the product telescopes
to exp(lambda r)); max and sum already summarise the whole line and are the weight itself. When the effective
sample size falls below ``ess_threshold * K`` (always, at threshold 1) the particles are resampled
systematically and the weights reset. At the end every particle is decoded and scored with the full reward; the
chosen sample is the best one. Intermediate scores can be made cheaper: decode only the first
``intermediate_seconds``, and/or pass ``intermediate_reward`` (e.g. a CLAP score).

Identities (tested): K = 1 without resampling is exactly the plain sampler; resampling with lambda = 0 keeps
every particle in place, so the final particles are best-of-K's candidates and the chosen one its winner.
Compute: ``steps * K`` NFE per prompt, the same as best-of-K, plus the intermediate decodes and reward calls
(recorded in :class:`~tunejury_align.recipes.compute.Compute`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..debug.worlds import WORLD_HELP, world_settings
from ..generators import as_diffusion_generator
from .best_of_n import REWARD_PROMPT_MODES
from .compute import Compute, total
from .smc_particles import (
    POTENTIALS,
    Steering,
    assign_slots,
    effective_sample_size,
    fresh_seed,
    log_potential,
    systematic_counts,
)


@dataclass
class SMCConfig:
    """Particle-steering settings (every field is a YAML key / ``key=value`` override)."""

    particles: int = field(default=8, metadata={"help": "K, particles per prompt (the compute of best-of-K)"})
    base_seed: int = field(default=42, metadata={
        "help": "particle k starts from seed base_seed + k (initial noise and sampler noise), as best-of-N's candidate k"})
    potential: str = field(default="max", metadata={"help": f"FK potential of a particle's rewards: {POTENTIALS}"})
    temperature: float = field(default=10.0, metadata={
        "help": "lambda: a potential weighs exp(lambda * value); 0 = no steering (best-of-K)"})
    resample_every: int = field(default=1, metadata={
        "help": "resampling interval: score the x0 predictions (and maybe resample) after every k-th sampler step"})
    ess_threshold: float = field(default=0.5, metadata={
        "help": "resample when the effective sample size < threshold * K; 1 = at every scoring step, 0 = never"})
    eta: float = field(default=1.0, metadata={
        "help": "AudioLDM2 only: DDIM eta of the particles (0 = the plain deterministic sampler, whose copies never "
                "diverge); Stable Audio's SDE sampler has its own noise"})
    intermediate_seconds: float | None = field(default=None, metadata={
        "help": "decode and score only the first seconds of the x0 predictions at intermediate steps (cheaper); "
                "null = the whole clip"})
    prompt_prefix: str = field(default="", metadata={"help": "prepended to each prompt for generation"})
    reward_prompt: str = field(default="prompt", metadata={"help": f"text the reward sees: {REWARD_PROMPT_MODES}"})
    save_all: bool = field(default=False, metadata={"help": "write every final particle's audio, not only the chosen"})
    generation: dict = field(default_factory=dict, metadata={"help": "generator options (steps, duration, ...)"})
    world: dict = field(default_factory=dict, metadata={"help": WORLD_HELP})

    def __post_init__(self):
        self.world = world_settings(self.world)
        if self.particles < 1 or self.resample_every < 1:
            raise ValueError("particles and resample_every must be >= 1")
        if self.potential not in POTENTIALS:
            raise ValueError(f"potential must be one of {POTENTIALS}, got {self.potential!r}")
        if not (self.temperature >= 0 and 0 <= self.ess_threshold <= 1 and self.eta >= 0):
            raise ValueError("temperature and eta must be >= 0 and ess_threshold in [0, 1]")
        if self.intermediate_seconds is not None and not self.intermediate_seconds > 0:
            raise ValueError(f"intermediate_seconds must be > 0 or null, got {self.intermediate_seconds}")
        if self.reward_prompt not in REWARD_PROMPT_MODES:
            raise ValueError(f"reward_prompt must be one of {REWARD_PROMPT_MODES}, got {self.reward_prompt!r}")


@dataclass
class SteeredPrompt:
    """One prompt's outcome: the final particles ``audio (K, C, T)``, their full ``rewards (K,)``, the chosen
    particle, the trace (per scoring step: ``step``, ``rewards``, ``ess``, ``ancestors`` when resampled) and the
    compute spent."""

    prompt_index: int
    audio: torch.Tensor
    rewards: torch.Tensor
    chosen: int
    trace: list[dict]
    compute: Compute
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # scorer name -> (K,)

    @property
    def chosen_audio(self) -> torch.Tensor:
        return self.audio[self.chosen]


@dataclass
class SMCResult:
    prompts: list[SteeredPrompt]
    sample_rate: int

    @property
    def compute(self) -> Compute:
        return total(p.compute for p in self.prompts)


class ParticleWeights:
    """The weighing and resampling decisions of one prompt's K particles (the ``on_x0`` of :class:`Steering`)."""

    def __init__(self, config: SMCConfig, prompt_index: int, steps: int, seeds: Sequence[int], score: Callable):
        self.config, self.prompt_index, self.steps, self.seeds, self.score = config, prompt_index, steps, seeds, score
        k = config.particles
        self.history = np.zeros((k, 0))  # (K, scoring steps so far): each slot's line of rewards
        self.log_weights = np.zeros(k)
        self.trace: list[dict] = []

    def __call__(self, step: int, x0: torch.Tensor):
        config = self.config
        if (step + 1) % config.resample_every or step == self.steps - 1:  # the last step is scored in full later
            return None
        rewards = self.score(x0).double().cpu().numpy()
        self.history = np.concatenate([self.history, rewards[:, None]], axis=1)
        potential = log_potential(config.potential, self.history, config.temperature)
        # difference: the product of the G_t since the last resampling (it telescopes to exp(lambda r)); max and
        # sum: G_t itself, which already summarises the whole line (FK steering resamples by it directly)
        self.log_weights = self.log_weights + potential if config.potential == "difference" else potential
        ess = effective_sample_size(self.log_weights)
        record = {"step": step, "rewards": [float(r) for r in rewards], "ess": ess}
        self.trace.append(record)
        if not (config.ess_threshold >= 1 or ess < config.ess_threshold * config.particles):
            return None
        uniform = np.random.default_rng([config.base_seed, self.prompt_index, step]).random()
        ancestors, fresh = assign_slots(systematic_counts(self.log_weights, uniform))
        record["ancestors"] = [int(a) for a in ancestors]
        self.history, self.log_weights = self.history[ancestors], np.zeros(config.particles)
        return ancestors, {slot: fresh_seed(self.seeds[slot], step) for slot, new in enumerate(fresh) if new}


def steer_prompt(generator, reward: Callable, prompt: str, prompt_index: int, config: SMCConfig,
                 intermediate_reward: Callable | None = None, scorers: dict[str, Callable] | None = None
                 ) -> SteeredPrompt:
    """Run K steered particles for one prompt (see the module docstring)."""
    # 1. Settings, seeds and the initial noise of best-of-N's candidates 0..K-1
    options = generator.options(**config.generation)
    k, compute = config.particles, Compute(pass_unit="nfe")
    seeds = [config.base_seed + c for c in range(k)]
    texts = [config.prompt_prefix + prompt] * k
    reward_text = {"prompt": prompt, "generation": config.prompt_prefix + prompt, "empty": ""}[config.reward_prompt]
    seconds = min(config.intermediate_seconds or options.duration, options.duration)
    frames = intermediate_frames(generator, seconds, options.duration)

    # 2. The intermediate scorer: decode each x0 prediction (optionally a shorter piece) and score it
    def score(x0: torch.Tensor) -> torch.Tensor:
        with compute.timing("generator"):
            audio = generator.decode_latents(x0, seconds, frames).clamp(-1.0, 1.0)
        with compute.timing("encoder"):
            scores = (intermediate_reward or reward)(audio, generator.sample_rate, [reward_text] * k)
        compute.reward_calls += k
        return scores.detach().float()

    # 3. The steered sampling loop (the adapter's own sampler with the steering hook)
    weights = ParticleWeights(config, prompt_index, options.steps, seeds, score)
    steering = Steering(seeds, weights, eta=config.eta)
    kwargs = {"noise_seeds": seeds} if "noise_seeds" in inspect.signature(generator.sample).parameters else {}
    with torch.no_grad():
        with compute.timing("generator"):
            noise = generator.initial_noise(seeds, options.duration)
            audio = generator.sample(texts, noise, options=options, steering=steering, **kwargs)
            audio = audio.detach().float().cpu().clamp(-1.0, 1.0)
        compute.generator_passes += options.steps * k
        # 4. Score the final particles with the full reward (and the scorers, e.g. the debug world's truth)
        with compute.timing("encoder"):
            rewards = reward(audio, generator.sample_rate, [reward_text] * k).detach().float().cpu()
        compute.reward_calls += k
        extras = {name: fn(audio, generator.sample_rate, [prompt] * k).detach().float().cpu()
                  for name, fn in (scorers or {}).items()}
    return SteeredPrompt(prompt_index, audio, rewards, int(torch.argmax(rewards)), weights.trace, compute, extras)


def intermediate_frames(generator, seconds: float, duration: float) -> int | None:
    """Latent frames covering the first ``seconds`` (``None``: all of them). Stable Audio's latents span its
    whole window (``max_duration``, longer than the clip); AudioLDM2's span ``duration``."""
    window = getattr(generator, "max_duration", duration)
    length = generator.initial_noise([0], duration).shape[2]
    frames = math.ceil(length * seconds / window) + 1
    return frames if frames < length else None


def smc(generator, reward: Callable, prompts: Sequence[str], config: SMCConfig | None = None, *,
        intermediate_reward: Callable | None = None, scorers: dict[str, Callable] | None = None,
        prompt_indices: Iterable[int] | None = None, skip: Iterable[int] = (),
        on_prompt: Callable[[SteeredPrompt], None] | None = None) -> SMCResult:
    """Feynman-Kac particle steering over ``prompts``; returns each prompt's final particles, rewards, trace
    (ancestry included) and chosen sample.

    ``generator``: a diffusion adapter (Stable Audio, AudioLDM2) or a diffusers pipeline of one; ``reward``:
    any ``reward(audio (B, C, T), sample_rate, prompts) -> (B,)``; ``intermediate_reward``: a cheaper one for the
    intermediate steps (default: ``reward``). ``scorers`` (name -> fn) score the final particles beside the
    reward (the debug world's truth). ``prompt_indices`` restricts the work to a shard, ``skip`` leaves out
    finished prompts (a resumed run), ``on_prompt`` is called after each prompt (the run folder writes there).
    """
    config = config or SMCConfig()
    generator = as_diffusion_generator(generator)
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts")
    generator.options(**config.generation)  # a bad generation option fails before any work
    done, results = set(skip), []
    for index in (range(len(prompts)) if prompt_indices is None else prompt_indices):
        if index in done:
            continue
        result = steer_prompt(generator, reward, prompts[index], index, config, intermediate_reward, scorers)
        if on_prompt is not None:
            on_prompt(result)
        results.append(result)
    return SMCResult(results, int(generator.sample_rate))
