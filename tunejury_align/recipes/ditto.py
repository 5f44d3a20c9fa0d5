"""DITTO: inference-time optimisation of the initial noise (Novack et al., 2024, arXiv 2401.12179).

The generator and the reward stay frozen; the only trainable tensor is the initial noise ``x_T``.
Each iteration runs the adapter's unrolled, deterministic sampler from ``x_T`` (DDIM with eta = 0 for
AudioLDM2; Stable Audio's SDE DPM-Solver with its Brownian noise seeded per run, so the same noise
gives the same audio), decodes through the VAE (and vocoder), clamps to [-1, 1] as ``generate`` does,
scores the audio with the reward inside the graph, and takes an Adam step on
``loss = -reward + noise_regularization * (|x_T| / sqrt(dim) - 1) ** 2``.

* ``checkpoint_steps`` (default on) recomputes each sampler step in backward, so memory does not grow
  with the number of steps; ``checkpoint_reward`` recomputes the whole reward call (its encoders).
* The reward of every iterate, including the baseline (iteration 0) and the final iterate, is the one
  this same frozen path computes: there is no second "reporting" scorer that could disagree.
* The best iterate (highest reward) is kept. An out-of-memory error names the settings to change.

Memory per iteration (``peak_memory``, bytes): see :class:`~tunejury_align.recipes.measure.PeakMemory`.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from torch.utils.checkpoint import checkpoint

from ..debug.worlds import WORLD_HELP, world_settings
from ..generators import as_diffusion_generator
from .best_of_n import reward_texts
from .compute import Compute
from .measure import PeakMemory, is_out_of_memory

logger = logging.getLogger(__name__)

PRESETS = {
    "paper": {"learning_rate": 5e-3, "sampler_steps": 20, "iterations": 70},  # Novack et al. 2024
    "fast": {"learning_rate": 0.05, "sampler_steps": 8, "iterations": 5},  # TuneJury's fast setting
}
REWARD_PROMPT_MODES = ("prompt", "generation", "empty")
# settings that change memory and time only, not the result (up to float rounding in the gradients)
MEMORY_SETTINGS = ("checkpoint_steps", "checkpoint_reward")


@dataclass
class DittoConfig:
    """DITTO settings. Preset values fill the fields left unset (``None``): defaults < preset < YAML <
    flags < overrides."""

    preset: str = field(default="paper", metadata={
        "help": f"base values for learning_rate, sampler_steps, iterations: {PRESETS}"})
    learning_rate: float | None = field(default=None, metadata={"help": "Adam learning rate (preset if unset)"})
    sampler_steps: int | None = field(default=None, metadata={"help": "sampler steps per iteration (preset if unset)"})
    iterations: int | None = field(default=None, metadata={
        "help": "Adam steps (preset if unset); iterates 0..iterations are all scored"})
    seed: int = field(default=42, metadata={"help": "seed of the initial noise (and of Stable Audio's SDE noise)"})
    checkpoint_steps: bool = field(default=True, metadata={
        "help": "gradient checkpointing around every sampler step (memory flat in the number of steps)"})
    checkpoint_reward: bool = field(default=False, metadata={
        "help": "also recompute the reward's encoders in backward (less memory, one more reward forward)"})
    noise_regularization: float = field(default=0.0, metadata={
        "help": "weight of (|x_T| / sqrt(dim) - 1)^2, keeping the noise a plausible Gaussian sample (0 = off)"})
    prompt_prefix: str = field(default="", metadata={"help": "prepended to each prompt for generation"})
    reward_prompt: str = field(default="prompt", metadata={
        "help": "text the reward sees: 'prompt', 'generation' (with the prefix) or 'empty'"})
    generation: dict = field(default_factory=dict, metadata={
        "help": "generator options (duration, guidance_scale, negative_prompt); the step count is sampler_steps"})
    world: dict = field(default_factory=dict, metadata={"help": WORLD_HELP})

    def __post_init__(self):
        self.world = world_settings(self.world)
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        for key in ("learning_rate", "noise_regularization"):  # YAML reads 5e-3 (no dot) as a string
            value = getattr(self, key)
            try:
                setattr(self, key, float(value))
            except (TypeError, ValueError):
                raise ValueError(f"{key} must be a number, got {value!r}") from None
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        for key in ("sampler_steps", "iterations"):
            value = getattr(self, key)
            if isinstance(value, bool) or int(value) != value or value < (1 if key == "sampler_steps" else 0):
                raise ValueError(f"{key} must be an integer >= {1 if key == 'sampler_steps' else 0}, got {value}")
            setattr(self, key, int(value))
        if self.noise_regularization < 0:
            raise ValueError(f"noise_regularization must be >= 0, got {self.noise_regularization}")
        if self.reward_prompt not in REWARD_PROMPT_MODES:
            raise ValueError(f"reward_prompt must be one of {REWARD_PROMPT_MODES}, got {self.reward_prompt!r}")
        if not isinstance(self.generation, dict):
            raise ValueError(f"generation must be a mapping of generator options, got {self.generation!r}")
        if "steps" in self.generation:
            raise ValueError("set the step count with sampler_steps, not generation.steps")

    def generation_options(self) -> dict:
        """Generator options for the sampler: ``generation`` plus ``steps = sampler_steps``."""
        return {**self.generation, "steps": self.sampler_steps}


@dataclass
class IterationRecord:
    """One scored iterate. ``backward`` is False for the last one (scored, not stepped)."""

    iteration: int
    reward: float
    loss: float
    noise_norm: float  # |x_T|; a standard Gaussian sample has about sqrt(dim)
    seconds: float  # forward (+ backward) of this iteration
    peak_memory: int  # bytes, see the module docstring
    start_memory: int  # bytes, same measure at the iteration's start
    backward: bool
    extras: dict[str, float] = field(default_factory=dict)  # scorer -> value of this iterate (e.g. truth)

    def as_dict(self) -> dict:
        record = asdict(self)
        record.update(record.pop("extras"))  # flat: {"reward": ..., "truth": ...}
        return record


@dataclass
class DittoResult:
    """Baseline (iteration 0) and best iterate of one prompt; audio ``(C, T)`` float32 on the CPU."""

    prompt: str
    seed: int
    sample_rate: int
    baseline_audio: torch.Tensor
    optimised_audio: torch.Tensor
    baseline_reward: float
    optimised_reward: float
    best_iteration: int
    history: list[IterationRecord]
    initial_noise: torch.Tensor  # (1, *latent shape), CPU
    optimised_noise: torch.Tensor  # the best iterate's noise, CPU
    memory_kind: str
    compute: Compute = field(default_factory=Compute)  # NFE (forward and checkpoint recomputes), reward calls

    @property
    def gain(self) -> float:
        return self.optimised_reward - self.baseline_reward

    @property
    def baseline_extras(self) -> dict[str, float]:
        """Each scorer's value at iterate 0 (e.g. ``{"truth": ...}`` in the debug world)."""
        return dict(self.history[0].extras)

    @property
    def optimised_extras(self) -> dict[str, float]:
        """Each scorer's value at the kept (best-reward) iterate."""
        return dict(self.history[self.best_iteration].extras)


class DittoOutOfMemoryError(RuntimeError):
    """DITTO ran out of memory; the message names the settings that lower it."""


def generator_device(generator) -> torch.device:
    device = getattr(generator, "device", None)
    return torch.device(device) if device is not None else torch.device("cpu")


# -- the frozen, differentiable path: noise -> audio -> reward ---------------------------------
@dataclass
class ObjectiveOutput:
    audio: torch.Tensor  # (1, C, T) clamped to [-1, 1]
    reward: torch.Tensor  # () float32
    loss: torch.Tensor  # ()
    noise_norm: torch.Tensor  # ()


class DittoObjective:
    """``objective(noise (1, *latent)) -> ObjectiveOutput`` for one prompt: the sampler with fixed SDE
    noise, the decode, the clamp and the reward, all in one graph (gradients reach ``noise`` only)."""

    def __init__(self, generator, reward: Callable, prompt: str, config: DittoConfig):
        self.generator = as_diffusion_generator(generator)
        self.reward, self.config = reward, config
        self.options = self.generator.options(**config.generation_options())
        self.generation_prompt = config.prompt_prefix + prompt
        self.reward_text = reward_texts(prompt, config)
        takes_seeds = "noise_seeds" in inspect.signature(self.generator.sample).parameters
        self.sample_kwargs = {"noise_seeds": [config.seed]} if takes_seeds else {}
        self.compute = Compute(pass_unit="nfe")  # reward calls and seconds are counted in score (also recomputes)

    def initial_noise(self) -> torch.Tensor:
        """``(1, *latent)`` float32 standard-normal noise from ``config.seed`` (what ``generate`` draws)."""
        return self.generator.initial_noise([self.config.seed], self.options.duration).float()

    def score(self, audio: torch.Tensor) -> torch.Tensor:
        with self.compute.timing("encoder"):
            scores = self.reward(audio, self.generator.sample_rate, [self.reward_text])
        self.compute.reward_calls += 1
        if not isinstance(scores, torch.Tensor) or scores.numel() != 1:
            raise ValueError(f"the reward returned {getattr(scores, 'shape', type(scores))} for one clip; expected (1,)")
        return scores.reshape(()).float()

    def finish_compute(self, seconds: float) -> Compute:
        """The compute of the whole optimisation: ``generator_seconds`` is the iterations' time outside the reward's
        forward calls (the sampler and the backward pass through sampler and reward)."""
        self.compute.generator_seconds = max(0.0, seconds - self.compute.encoder_seconds)
        return self.compute

    def __call__(self, noise: torch.Tensor) -> ObjectiveOutput:
        grad = torch.is_grad_enabled()
        audio = self.generator.sample([self.generation_prompt], noise, options=self.options,
                                      checkpoint_steps=self.config.checkpoint_steps and grad, **self.sample_kwargs)
        audio = audio.float().clamp(-1.0, 1.0)  # as generate() returns it, so iterate 0 equals generate()
        checkpointed = self.config.checkpoint_steps and grad  # each step is evaluated again in backward
        self.compute.generator_passes += self.options.steps * (2 if checkpointed else 1)
        if self.config.checkpoint_reward and grad:
            reward = checkpoint(self.score, audio, use_reentrant=False)
        else:
            reward = self.score(audio)
        noise_norm = noise.float().norm()
        loss = -reward
        if self.config.noise_regularization:
            deviation = noise_norm / math.sqrt(noise.numel()) - 1.0
            loss = loss + self.config.noise_regularization * deviation.to(loss.device) ** 2
        return ObjectiveOutput(audio, reward, loss, noise_norm)


def out_of_memory_advice(config: DittoConfig, generator, duration: float, iteration: int) -> str:
    """The settings that lower DITTO's memory, those not already applied first."""
    steps = config.sampler_steps
    advice = []
    if not config.checkpoint_steps:
        advice.append(f"checkpoint_steps=true (memory then stops growing with the {steps} sampler steps)")
        advice.append(f"fewer sampler steps, e.g. sampler_steps={max(1, steps // 2)}")
    if not config.checkpoint_reward:
        advice.append("checkpoint_reward=true (recomputes the reward's encoders in backward)")
    if getattr(generator, "family", None) == "stable-audio":
        advice.append("a shorter clip does not help Stable Audio (it always denoises and decodes the model's full "
                      "window); use guidance_scale=1 (one transformer pass instead of two) or a larger device")
    else:
        advice.append(f"a shorter clip, e.g. generation.duration={duration / 2:g}")
    return (f"out of memory in DITTO iteration {iteration} (sampler_steps={steps}, checkpoint_steps="
            f"{config.checkpoint_steps}, checkpoint_reward={config.checkpoint_reward}, generation.duration="
            f"{duration:g}). Lower the memory with: " + "; ".join(advice) + ".")


# -- the recipe --------------------------------------------------------------------------------
def _forward_backward(objective, noise: torch.Tensor, optimizer, config: DittoConfig, iteration: int):
    """Score ``noise`` (and, with an ``optimizer``, back-propagate the loss into ``noise.grad``); an
    out-of-memory error becomes a :class:`DittoOutOfMemoryError` naming the settings to change."""
    try:
        with torch.set_grad_enabled(optimizer is not None):
            output = objective(noise)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                output.loss.backward()
        return output
    except RuntimeError as err:
        if is_out_of_memory(err):
            raise DittoOutOfMemoryError(out_of_memory_advice(
                config, objective.generator, objective.options.duration, iteration)) from err
        raise


def ditto(
    generator,
    reward: Callable,
    prompt: str,
    *,
    config: DittoConfig | None = None,
    seed: int | None = None,
    on_iteration: Callable[[IterationRecord], None] | None = None,
    scorers: dict[str, Callable] | None = None,
) -> DittoResult:
    """Optimise the initial noise of ``generator`` for ``prompt`` to maximise ``reward`` (DITTO).

    ``generator``: a Stable Audio / AudioLDM2 adapter or a diffusers ``StableAudioPipeline`` /
    ``AudioLDM2Pipeline``. ``reward``: any differentiable ``reward(audio (B, C, T), sample_rate,
    prompts) -> (B,)``, e.g. :class:`~tunejury_align.reward.TuneJuryReward`. ``seed`` overrides
    ``config.seed``. Runs ``config.iterations`` Adam steps and scores iterates ``0..iterations``;
    ``on_iteration`` gets each :class:`IterationRecord` as it is made. ``scorers`` (name -> ``fn(audio,
    sample_rate, prompts) -> (B,)``) score every iterate's audio beside the reward without steering it
    (e.g. the debug world's truth; see :attr:`DittoResult.optimised_extras`). Returns the baseline and the
    best iterate. Raises :class:`DittoOutOfMemoryError` naming the settings to change.
    """
    # 1. Setup: the frozen path, the noise (the only trainable tensor), Adam
    config = config or DittoConfig()
    if seed is not None:
        config = replace(config, seed=int(seed))
    objective = DittoObjective(generator, reward, prompt, config)
    device = generator_device(objective.generator)
    initial_noise = objective.initial_noise()
    noise = initial_noise.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([noise], lr=config.learning_rate)
    meter = PeakMemory(device)
    history: list[IterationRecord] = []
    baseline_audio = best_audio = best_noise = None
    best: IterationRecord | None = None

    # 2. Optimisation loop: score iterate i (with grad unless it is the last), then step
    for iteration in range(config.iterations + 1):
        stepping = iteration < config.iterations
        start_memory = meter.start()
        started = time.perf_counter()
        output = _forward_backward(objective, noise, optimizer if stepping else None, config, iteration)
        peak_memory = meter.peak()  # synchronises CUDA first
        seconds = time.perf_counter() - started
        record = IterationRecord(iteration=iteration, reward=float(output.reward.detach()),
                                 loss=float(output.loss.detach()), noise_norm=float(output.noise_norm.detach()),
                                 seconds=seconds, peak_memory=int(peak_memory), start_memory=int(start_memory),
                                 backward=stepping)
        if not math.isfinite(record.reward):
            raise FloatingPointError(f"non-finite reward at DITTO iteration {iteration}; lower learning_rate "
                                     f"(now {config.learning_rate})")
        # 3. Score the iterate with the extra scorers; keep the baseline and the best iterate (earliest wins ties)
        audio = output.audio.detach()[0].float().cpu()
        with torch.no_grad():
            record.extras = {name: float(fn(output.audio.detach(), objective.generator.sample_rate, [prompt])[0])
                             for name, fn in (scorers or {}).items()}
        if iteration == 0:
            baseline_audio = audio
        if best is None or record.reward > best.reward:
            best, best_audio, best_noise = record, audio, noise.detach().float().cpu().clone()
        history.append(record)
        logger.info("DITTO iteration %d: reward %.4f, |noise| %.1f, %.2f s, peak %.0f MB", iteration, record.reward,
                    record.noise_norm, record.seconds, record.peak_memory / 2**20)
        if on_iteration is not None:
            on_iteration(record)
        del output
        if stepping:
            optimizer.step()

    # 4. Result
    return DittoResult(prompt=prompt, seed=config.seed, sample_rate=int(objective.generator.sample_rate),
                       baseline_audio=baseline_audio, optimised_audio=best_audio,
                       baseline_reward=history[0].reward, optimised_reward=best.reward,
                       best_iteration=best.iteration, history=history, initial_noise=initial_noise.cpu(),
                       optimised_noise=best_noise, memory_kind=meter.kind,
                       compute=objective.finish_compute(sum(r.seconds for r in history)))
