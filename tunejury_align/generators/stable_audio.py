"""Stable Audio Open (Evans et al., 2024, arXiv 2407.14358) through diffusers' ``StableAudioPipeline``:
``stabilityai/stable-audio-open-1.0`` by hub id, or a local folder saved with ``save_pretrained``.

:meth:`StableAudioGenerator.sample` is our own unrolled copy of ``StableAudioPipeline.__call__``
over the pipeline's public parts (``encode_prompt``, ``encode_duration``, ``transformer``,
``scheduler.step``, ``vae.decode``). It takes the initial noise as an input and keeps the graph to it, so
DITTO (Novack et al., 2024, arXiv 2401.12179) can optimise that noise (``torch.utils.checkpoint`` optional).

Per-candidate seeding. Candidate i depends on two random sources, both a function of seed i only:

* the initial latent noise, drawn from ``torch.Generator().manual_seed(seed_i)`` exactly as the
  pipeline's ``prepare_latents`` draws it from a list of generators;
* the SDE noise of ``CosineDPMSolverMultistepScheduler``: given a *list* of generators, its ``step``
  builds a ``BatchedBrownianTree`` of one ``torchsde.BrownianInterval`` per item, seeded with that
  item's ``generator.initial_seed()`` (own path, own seeded generators, the same queries for every
  item), so item i's Brownian path depends on seed i alone. We pass one generator per item, as
  ``pipe(..., generator=[g_0, ..., g_B-1])`` does: both give the same audio.

The number of latent frames is always ``transformer.config.sample_size`` (the model's full window,
47.55 s for Stable Audio Open); as in the pipeline, ``duration`` conditions the model and crops the
decoded audio. The conditioning (:meth:`StableAudioGenerator.conditioning`) is cached per (prompts,
duration, guidance): DITTO's iterations and best-of-N's batches do not re-encode the prompt.

Fine-tuning (:class:`StableAudioTrainer`, expert iteration): the kept audio, zero-padded to the model's
window, is encoded to the VAE posterior mean; the loss is the v-objective of stable-audio-tools'
``DiffusionCondTrainingWrapper`` (the code Stable Audio Open was trained with): ``t ~ U[0, 1)`` (1 % of
items set to ``t = 1``), ``alpha, sigma = cos(pi t / 2), sin(pi t / 2)``, DiT input ``alpha x0 + sigma
eps`` at timestep ``t``, target ``v = alpha eps - sigma x0``, MSE. In diffusers' terms
(``CosineDPMSolverMultistepScheduler``, ``sigma_data = 1``, v-prediction) it is the noise level ``s =
tan(pi t / 2)`` with ``precondition_noise(s) = t``. Dropped items (``condition_dropout``) get the null
(all-zero) cross-attention states.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..tiny_tokenizers import STABLE_AUDIO_T5_MAX_LENGTH, STABLE_AUDIO_VOCAB_TEXT, tiny_t5_tokenizer, words_of
from .base import (
    Family,
    Trainer,
    check_generated,
    check_request,
    item_generators,
    library_versions,
    load_diffusers_pipeline,
)

CONDITIONING_CACHE_SIZE = 8


@dataclass
class StableAudioOptions:
    """Sampling options (defaults: ``StableAudioPipeline.__call__``'s, with a 10 s clip)."""

    steps: int = 100  # denoising steps of CosineDPMSolverMultistepScheduler
    guidance_scale: float = 7.0  # classifier-free guidance weight; 1 disables guidance
    duration: float = 10.0  # seconds, at most the model's window (47.55 s for Stable Audio Open)
    negative_prompt: str = ""  # "" = the null (all-zero) unconditional embedding, as in the pipeline
    max_batch_size: int = 4  # most candidates per denoising batch in generate()

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.guidance_scale >= 1.0:
            raise ValueError(f"guidance_scale must be >= 1 (1 disables guidance), got {self.guidance_scale}")
        if not self.duration > 0:
            raise ValueError(f"duration must be > 0 seconds, got {self.duration}")
        if not isinstance(self.negative_prompt, str):
            raise TypeError(f"negative_prompt must be a string, got {type(self.negative_prompt).__name__}")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")


class StableAudioGenerator:
    """Stable Audio adapter: ``generate(prompts, seeds, **options) -> (B, C, T)`` at ``sample_rate``.

    ``default_options`` (a dict of :class:`StableAudioOptions` fields) sits under the options passed
    to :meth:`generate`/:meth:`options`; the debug generator uses it for 4 steps and 2 s clips.
    The pipeline's modules are put in eval mode and frozen (``requires_grad_(False)``): gradients
    flow to the initial noise only.
    """

    family = "stable-audio"
    options_class = StableAudioOptions

    def __init__(self, pipe, name: str, is_debug: bool = False, default_options: dict | None = None):
        self.pipe = pipe
        for module in (pipe.text_encoder, pipe.projection_model, pipe.transformer, pipe.vae):
            module.eval().requires_grad_(False)
        self.name = name
        self.is_debug = is_debug
        self.sample_rate = int(pipe.vae.config.sampling_rate)
        self.default_options = dict(default_options or {})
        StableAudioOptions(**self.default_options)  # fail early on a bad default
        self._conditioning_cache: OrderedDict = OrderedDict()

    @classmethod
    def from_pretrained(cls, name: str, device=None, dtype=None) -> StableAudioGenerator:
        from diffusers import StableAudioPipeline

        pipe = load_diffusers_pipeline(StableAudioPipeline, name, "Stable Audio", dtype)
        generator = cls(pipe, name)
        return generator.to(device) if device else generator

    @classmethod
    def from_pipeline(cls, pipe, name: str = "stable-audio") -> StableAudioGenerator:
        """Wrap a ``StableAudioPipeline`` the caller already holds."""
        return cls(pipe, name)

    def to(self, device) -> StableAudioGenerator:
        self.pipe.to(device)
        self.clear_cache()
        return self

    def clear_cache(self) -> None:
        """Forget cached conditioning (after the text encoder or projection model changed)."""
        self._conditioning_cache.clear()

    @property
    def device(self) -> torch.device:
        return self.pipe.transformer.device

    @property
    def max_duration(self) -> float:
        """Seconds in the model's window: ``sample_size`` latent frames of ``vae.hop_length`` samples."""
        return self.pipe.transformer.config.sample_size * self.pipe.vae.hop_length / self.sample_rate

    def info(self) -> dict:
        return {"generator": self.name, "family": self.family, "debug": self.is_debug,
                "sample_rate": self.sample_rate, "default_options": dict(self.default_options),
                "versions": library_versions("diffusers", "transformers")}

    def options(self, **overrides) -> StableAudioOptions:
        """:class:`StableAudioOptions` from ``default_options`` updated with ``overrides``."""
        return StableAudioOptions(**{**self.default_options, **overrides})

    def initial_noise(self, seeds: Sequence[int], duration: float | None = None) -> torch.Tensor:
        """``(B,)`` seeds -> ``(B, C, L)`` standard-normal latent noise, item i drawn from its own
        ``torch.Generator`` seeded with ``seeds[i]`` (as the pipeline's ``prepare_latents``).

        ``C = transformer.config.in_channels`` and ``L = transformer.config.sample_size`` whatever
        the ``duration`` (only checked here): the pipeline always denoises the full window.
        :meth:`sample` scales this noise by the scheduler's ``init_noise_sigma``.
        """
        if duration is not None:
            self._check_duration(duration)
        if not seeds:
            raise ValueError("initial_noise needs at least one seed")
        config = self.pipe.transformer.config
        shape = (1, config.in_channels, config.sample_size)
        device, dtype = self.device, self.pipe.transformer.dtype
        return torch.cat([torch.randn(shape, generator=g, device=device, dtype=dtype)
                          for g in item_generators(seeds, device)])

    def _check_duration(self, duration: float) -> None:
        projection_max = self.pipe.projection_model.config.max_value
        if not 0 < duration <= min(self.max_duration, projection_max):
            raise ValueError(f"duration must be in (0, {min(self.max_duration, projection_max):.3f}] seconds "
                             f"for '{self.name}', got {duration}")

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seeds: Sequence[int], **options) -> torch.Tensor:
        """``prompts``/``seeds`` (B each) -> ``(B, C, T)`` float32 audio in [-1, 1], ``T = duration *
        sample_rate``; options: :class:`StableAudioOptions` fields over ``default_options``."""
        opts = self.options(**options)
        prompts, seeds = check_request(prompts, seeds)
        audios = []
        for i in range(0, len(prompts), opts.max_batch_size):
            chunk_prompts, chunk_seeds = prompts[i:i + opts.max_batch_size], seeds[i:i + opts.max_batch_size]
            audio = self.sample(chunk_prompts, self.initial_noise(chunk_seeds), noise_seeds=chunk_seeds, options=opts)
            audios.append(check_generated(audio.clamp(-1.0, 1.0), len(chunk_prompts), self.name))
        return torch.cat(audios)

    def conditioning(self, prompts: Sequence[str], duration: float, guided: bool = False,
                     negative_prompt: str = ""):
        """The DiT's conditioning as ``StableAudioPipeline.__call__`` builds it: ``(cross-attention
        states (B', L, D), global states (B', 1, D_g), rotary embedding)`` with ``B' = 2B`` when
        ``guided`` (rows ``[unconditional; conditional]``: the negative prompt's embedding, or the
        null (all-zero) embedding when ``negative_prompt`` is empty) and ``B' = B`` otherwise.
        Differentiable in the text encoder and projection model's parameters (fine-tuning)."""
        from diffusers.models.embeddings import get_1d_rotary_pos_embed

        pipe, device, batch_size = self.pipe, self.device, len(prompts)
        negative = [negative_prompt] * batch_size if guided and negative_prompt else None
        # 2. Encode the prompts (T5 + projection; negative prompt first when given)
        prompt_embeds = pipe.encode_prompt(list(prompts), device, guided, negative)
        # 3. Encode the duration [0, duration] seconds and build the cross-attention / global states
        seconds_start, seconds_end = pipe.encode_duration(0.0, duration, device, guided and negative is not None,
                                                          batch_size)
        cross = torch.cat([prompt_embeds, seconds_start, seconds_end], dim=1)
        global_states = torch.cat([seconds_start, seconds_end], dim=2)
        if guided and negative is None:  # null unconditional embedding
            cross = torch.cat([torch.zeros_like(cross), cross])
            global_states = torch.cat([global_states, global_states])
        # 7. Rotary positional embedding
        rotary = get_1d_rotary_pos_embed(pipe.rotary_embed_dim, pipe.transformer.config.sample_size +
                                         global_states.shape[1], use_real=True, repeat_interleave_real=False)
        return cross, global_states, rotary

    @torch.no_grad()
    def cached_conditioning(self, prompts: Sequence[str], duration: float, guided: bool, negative_prompt: str):
        """:meth:`conditioning` without gradients, cached for the last few requests."""
        key = (tuple(prompts), float(duration), bool(guided), negative_prompt)
        if key not in self._conditioning_cache:
            self._conditioning_cache[key] = self.conditioning(prompts, duration, guided, negative_prompt)
            while len(self._conditioning_cache) > CONDITIONING_CACHE_SIZE:
                self._conditioning_cache.popitem(last=False)
        self._conditioning_cache.move_to_end(key)
        return self._conditioning_cache[key]

    def sample(self, prompts: Sequence[str], initial_noise: torch.Tensor, *, noise_seeds: Sequence[int],
               options: StableAudioOptions | None = None, checkpoint_steps: bool = False,
               decode: bool = True, steering=None) -> torch.Tensor:
        """Unrolled, differentiable sampler: ``(B,)`` prompts, ``(B, C, L)`` standard-normal ``initial_noise``
        and ``(B,)`` ``noise_seeds`` (SDE noise) -> ``(B, C_audio, T)`` audio (not clamped), or the final
        ``(B, C, L)`` latents with ``decode=False``. Mirrors ``StableAudioPipeline.__call__`` (text-to-audio,
        one waveform per prompt): with ``generator=[torch.Generator().manual_seed(s) for s in noise_seeds]``
        both give the same audio. Under grad the result keeps its graph to ``initial_noise``;
        ``checkpoint_steps=True`` recomputes each transformer call in backward (the scheduler update, stateful
        and cheap, stays outside the checkpoint). ``steering`` (:mod:`..recipes.smc_particles`) sees the scheduler,
        then after each step the latents and x0 prediction, and returns the (resampled) latents to go on with.
        """
        opts = options if options is not None else self.options()
        pipe, prompts, noise_seeds = self.pipe, list(prompts), [int(s) for s in noise_seeds]
        batch_size, device = len(prompts), self.device
        # 1. Check inputs
        config = pipe.transformer.config
        if not prompts or len(noise_seeds) != batch_size:
            raise ValueError(f"got {len(prompts)} prompts and {len(noise_seeds)} noise seeds; pass one per prompt")
        if tuple(initial_noise.shape) != (batch_size, config.in_channels, config.sample_size):
            raise ValueError(f"initial_noise has shape {tuple(initial_noise.shape)}, expected "
                             f"({batch_size}, {config.in_channels}, {config.sample_size})")
        self._check_duration(opts.duration)
        do_classifier_free_guidance = opts.guidance_scale > 1.0
        # 2.-3. Encode the prompts, the duration and the rotary embedding (cached; no grad: they do not
        # depend on the noise)
        text_audio_duration_embeds, audio_duration_embeds, rotary_embedding = self.cached_conditioning(
            prompts, opts.duration, do_classifier_free_guidance, opts.negative_prompt)

        # 4. Prepare timesteps on a fresh scheduler (keeps the pipeline's own scheduler untouched)
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        scheduler.set_timesteps(opts.steps, device=device)

        # 5. Prepare latent variables: the given noise, scaled as in prepare_latents
        latents = initial_noise.to(device=device, dtype=text_audio_duration_embeds.dtype)
        latents = latents * scheduler.init_noise_sigma

        # 6. Per-item generators: the scheduler seeds one Brownian tree per item from initial_seed()
        noise_generators = item_generators(noise_seeds, device)
        if steering is not None:
            steering.start(scheduler, latents)

        def guided_velocity(model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            """``(B, C, L)`` preconditioned latents -> ``(B, C, L)`` guided v-prediction at ``t``."""
            model_input = torch.cat([model_input] * 2) if do_classifier_free_guidance else model_input
            prediction = pipe.transformer(
                model_input, t.unsqueeze(0), encoder_hidden_states=text_audio_duration_embeds,
                global_hidden_states=audio_duration_embeds, rotary_embedding=rotary_embedding,
                return_dict=False)[0]
            if do_classifier_free_guidance:
                prediction_uncond, prediction_text = prediction.chunk(2)
                prediction = prediction_uncond + opts.guidance_scale * (prediction_text - prediction_uncond)
            return prediction

        # 8. Denoising loop
        use_checkpoint = checkpoint_steps and torch.is_grad_enabled()
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(latents, t)
            if use_checkpoint:
                velocity = checkpoint(
                    lambda x, t=t: guided_velocity(x, t), model_input, use_reentrant=False)
            else:
                velocity = guided_velocity(model_input, t)
            with warnings.catch_warnings():  # torchsde: queries at the ends of [sigma_min, sigma_max]
                warnings.filterwarnings("ignore", message="Should have t", module="torchsde")
                latents = scheduler.step(velocity, t, latents, generator=noise_generators).prev_sample
            if steering is not None:  # model_outputs[-1]: this step's x0 prediction (convert_model_output)
                latents = steering.step(latents, scheduler.model_outputs[-1], scheduler)

        if not decode:
            return latents
        return self.decode_latents(latents, opts.duration)

    def decode_latents(self, latents: torch.Tensor, duration: float, frames: int | None = None) -> torch.Tensor:
        """``(B, C, L)`` latents -> ``(B, C_audio, T)`` audio cropped to ``duration`` seconds; ``frames`` decodes
        only the first latent frames (a cheaper, approximate decode for particle steering's intermediate scores)."""
        audio = self.pipe.vae.decode(latents if frames is None else latents[..., :frames]).sample
        return audio[:, :, : int(duration * self.sample_rate)]


def tiny_stable_audio(seed: int = 0, decoder_channels: int = 4, channel_multiples=(1, 2, 2, 4, 4), sample_size: int = 64):
    """A tiny random ``StableAudioPipeline`` of the real architecture (T5 encoder, projection model, DiT, Oobleck
    VAE at 44.1 kHz with 2048x downsampling, cosine DPM-Solver SDE scheduler), built in-process without the hub:
    ``sample_size`` latent frames (64: a 2.97 s window). The caller's RNG is untouched."""
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5Config, T5EncoderModel

    tokenizer = tiny_t5_tokenizer(words_of(STABLE_AUDIO_VOCAB_TEXT), space_score=-2.0, max_length=STABLE_AUDIO_T5_MAX_LENGTH)
    text_config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                           pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = T5EncoderModel(text_config).eval()
        projection_model = StableAudioProjectionModel(text_encoder_dim=32, conditioning_dim=16, min_value=0,
                                                      max_value=512)
        transformer = StableAudioDiTModel(
            sample_size=sample_size, in_channels=8, num_layers=2, attention_head_dim=8, num_attention_heads=4,
            num_key_value_attention_heads=2, out_channels=8, cross_attention_dim=32, time_proj_dim=16,
            global_states_input_dim=32, cross_attention_input_dim=16)
        with warnings.catch_warnings():  # Oobleck still uses torch.nn.utils.weight_norm
            warnings.filterwarnings("ignore", category=FutureWarning)
            vae = AutoencoderOobleck(encoder_hidden_size=16, downsampling_ratios=[2, 4, 4, 8, 8],  # 8 latent ch.
                                     channel_multiples=list(channel_multiples), decoder_channels=decoder_channels,
                                     decoder_input_channels=8, audio_channels=2, sampling_rate=44_100)
    scheduler = CosineDPMSolverMultistepScheduler(sigma_min=0.3, sigma_max=500, sigma_data=1.0,
                                                  sigma_schedule="exponential", solver_order=2,
                                                  prediction_type="v_prediction")
    return StableAudioPipeline(vae=vae, text_encoder=text_encoder, projection_model=projection_model,
                               tokenizer=tokenizer, transformer=transformer, scheduler=scheduler)


def debug_stable_audio(seed: int = 0) -> StableAudioGenerator:
    """The debug world's Stable Audio (4 steps, 2 s clips in a 2.04 s window of 44 latent frames, all of which
    the pipeline always denoises and decodes): :func:`tiny_stable_audio` with an 8-channel Oobleck decoder, voiced
    by :func:`.voicing.voice_stable_audio` so that timbre and level follow the initial noise (DITTO moves them)."""
    from .voicing import voice_stable_audio

    pipe = tiny_stable_audio(seed, decoder_channels=8, channel_multiples=(1, 1, 1, 1, 1), sample_size=44)
    voice_stable_audio(pipe)
    return StableAudioGenerator(pipe, name="debug-stable-audio", is_debug=True,
                                default_options={"steps": 4, "duration": 2.0})


class StableAudioTrainer(Trainer):
    """v-objective diffusion loss of a diffusers ``StableAudioPipeline``'s DiT."""

    family = "stable-audio"
    default_trainable = (r"^transformer\.",)
    untrainable = (r"^vae\.",)
    terminal_fraction = 0.01  # items trained at t = 1 (stable-audio-tools' terminal-SNR share)

    def __init__(self, generator, trainable: Sequence[str] | None = None, generation: dict | None = None):
        self.generator, self.pipe = generator, generator.pipe
        scheduler = self.pipe.scheduler.config
        if scheduler.get("prediction_type") != "v_prediction" or scheduler.get("sigma_data", 1.0) != 1.0:
            raise NotImplementedError("the Stable Audio loss is implemented for a v-prediction scheduler with "
                                      f"sigma_data = 1 (got {scheduler.get('prediction_type')}, "
                                      f"{scheduler.get('sigma_data')})")
        latent_channels = self.pipe.vae.config.encoder_hidden_size // 2  # the encoder gives mean and scale
        if latent_channels != self.pipe.transformer.config.in_channels:
            raise ValueError(f"the VAE encodes to {latent_channels} latent channels but the DiT takes "
                             f"{self.pipe.transformer.config.in_channels}: this pipeline cannot be trained on its "
                             "own VAE latents")
        self.root = nn.ModuleDict({name: getattr(self.pipe, name)
                                   for name in ("transformer", "projection_model", "text_encoder", "vae")})
        self.duration = generator.options(**(generation or {})).duration  # the loss is conditioned on it
        self._select(trainable)

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` audio -> ``(B, C_latent, sample_size)`` VAE posterior means of the audio
        zero-padded (or cropped) to the window the pipeline always denoises."""
        window = int(self.pipe.transformer.config.sample_size * self.pipe.vae.hop_length)
        audio = nn.functional.pad(audio[..., :window], (0, max(0, window - audio.shape[-1])))
        vae = self.pipe.vae
        return vae.encode(audio.to(self.device, vae.dtype)).latent_dist.mean.float().cpu()

    def draws(self, seeds: Sequence[int], latent_shape, condition_dropout: float):
        """Per item from ``torch.Generator(seed)``: ``t (B,)``, ``noise (B, *latent_shape)``, ``keep (B,)``."""
        times, noises, keeps = [], [], []
        for g in item_generators(seeds):
            t = torch.rand(1, generator=g)
            terminal = torch.rand(1, generator=g) < self.terminal_fraction
            times.append(torch.where(terminal, torch.ones_like(t), t))
            noises.append(torch.randn(tuple(latent_shape), generator=g))
            keeps.append((torch.rand(1, generator=g) >= condition_dropout).float())
        return torch.cat(times), torch.stack(noises), torch.cat(keeps)

    def loss(self, targets: torch.Tensor, texts: Sequence[str], seeds: Sequence[int],
             condition_dropout: float = 0.0) -> torch.Tensor:
        """MSE between the DiT's v-prediction and ``alpha eps - sigma x0`` for ``(B, C, L)`` latents."""
        device, dtype = self.device, self.pipe.transformer.dtype
        latents = targets.to(device, torch.float32)
        t, noise, keep = self.draws(seeds, latents.shape[1:], condition_dropout)
        t, noise, keep = t.to(device), noise.to(device), keep.to(device)
        alpha, sigma = torch.cos(t * math.pi / 2)[:, None, None], torch.sin(t * math.pi / 2)[:, None, None]
        noised = alpha * latents + sigma * noise
        cross, global_states, rotary = self.generator.conditioning(texts, self.duration)
        cross = cross * keep[:, None, None]  # dropped items: the null (all-zero) condition
        velocity = self.pipe.transformer(noised.to(dtype), t.to(dtype), encoder_hidden_states=cross,
                                         global_hidden_states=global_states, rotary_embedding=rotary,
                                         return_dict=False)[0]
        return nn.functional.mse_loss(velocity.float(), alpha * noise - sigma * latents)

    def save_pretrained(self, path: Path) -> None:
        self.pipe.save_pretrained(path)

    def load_pretrained(self, path: Path) -> None:
        from diffusers import StableAudioPipeline

        loaded = StableAudioPipeline.from_pretrained(path, torch_dtype=self.pipe.transformer.dtype)
        for name, module in self.root.items():
            module.load_state_dict(getattr(loaded, name).state_dict())
        self.generator.clear_cache()

    def train_mode(self, on: bool) -> None:
        super().train_mode(on)
        self.generator.clear_cache()  # the text encoder / projection model may be trained


FAMILY = Family(
    name="stable-audio", summary="Stable Audio Open (stabilityai/stable-audio-open-1.0), diffusers",
    adapter=StableAudioGenerator, debug=debug_stable_audio, pipeline_classes=("StableAudioPipeline",),
    trainer=StableAudioTrainer)
