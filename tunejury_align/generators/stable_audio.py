"""Stable Audio Open (Evans et al., 2024, arXiv 2407.14358) through diffusers' ``StableAudioPipeline``.

``stabilityai/stable-audio-open-1.0`` by hub id, or a local folder saved with ``save_pretrained``.

:meth:`StableAudioGenerator.sample` is our own unrolled copy of ``StableAudioPipeline.__call__``
over the pipeline's public parts (``encode_prompt``, ``encode_duration``, ``transformer``,
``scheduler.step``, ``vae.decode``). It takes the initial noise as an input and keeps the graph to
it, so DITTO (Novack et al., 2024, arXiv 2401.12179) can optimise that noise, optionally with
``torch.utils.checkpoint`` around each transformer call.

Per-candidate seeding. Candidate i depends on two random sources, both a function of seed i only:

* the initial latent noise, drawn from ``torch.Generator().manual_seed(seed_i)`` exactly as the
  pipeline's ``prepare_latents`` draws it from a list of generators;
* the SDE noise of ``CosineDPMSolverMultistepScheduler``: its ``step`` builds a diffusers
  ``BatchedBrownianTree`` that holds one ``torchsde.BrownianInterval`` per batch item, seeded with
  ``generator.initial_seed()`` of that item's generator when ``step`` gets a *list* of generators.
  Each interval has its own size-(C, L) path and its own seeded ``torch.Generator``s (the global
  RNG is untouched), and every item sees the same sequence of queries, so item i's Brownian path
  depends on seed i alone. We always pass one generator per item (seeded with its noise seed),
  which is also what ``pipe(..., generator=[g_0, ..., g_B-1])`` does: both give the same audio.

The number of latent frames is always ``transformer.config.sample_size`` (the model's full window,
47.55 s for Stable Audio Open); as in the pipeline, ``duration`` conditions the model and crops the
decoded audio.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from .base import check_generated, check_request, item_generators, library_versions, load_diffusers_pipeline


@dataclass
class StableAudioOptions:
    """Sampling options (defaults: ``StableAudioPipeline.__call__``'s, with a 10 s clip)."""

    steps: int = 100  # denoising steps of CosineDPMSolverMultistepScheduler
    guidance_scale: float = 7.0  # classifier-free guidance weight; 1 disables guidance
    duration: float = 10.0  # seconds, at most the model's window (47.55 s for Stable Audio Open)
    negative_prompt: str = ""  # "" = the null (all-zero) unconditional embedding, as in the pipeline
    batch_size: int = 4  # candidates per denoising batch in generate()

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.guidance_scale >= 1.0:
            raise ValueError(f"guidance_scale must be >= 1 (1 disables guidance), got {self.guidance_scale}")
        if not self.duration > 0:
            raise ValueError(f"duration must be > 0 seconds, got {self.duration}")
        if not isinstance(self.negative_prompt, str):
            raise TypeError(f"negative_prompt must be a string, got {type(self.negative_prompt).__name__}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


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
        return self

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
        for i in range(0, len(prompts), opts.batch_size):
            chunk_prompts, chunk_seeds = prompts[i:i + opts.batch_size], seeds[i:i + opts.batch_size]
            audio = self.sample(chunk_prompts, self.initial_noise(chunk_seeds), noise_seeds=chunk_seeds, options=opts)
            audios.append(check_generated(audio.clamp(-1.0, 1.0), len(chunk_prompts), self.name))
        return torch.cat(audios)

    def sample(self, prompts: Sequence[str], initial_noise: torch.Tensor, *, noise_seeds: Sequence[int],
               options: StableAudioOptions | None = None, checkpoint_steps: bool = False,
               decode: bool = True) -> torch.Tensor:
        """Unrolled, differentiable sampler: ``(B,)`` prompts, ``(B, C, L)`` standard-normal
        ``initial_noise`` (see :meth:`initial_noise`) and ``(B,)`` ``noise_seeds`` for the SDE noise
        -> ``(B, C_audio, T)`` decoded audio (not clamped), or the ``(B, C, L)`` final latents when
        ``decode=False``.

        Mirrors ``diffusers.StableAudioPipeline.__call__`` (text-to-audio path, one waveform per
        prompt, ``audio_start_in_s=0``, ``audio_end_in_s=duration``); with the same prompts, noise and
        ``generator=[torch.Generator().manual_seed(s) for s in noise_seeds]`` both give the same audio.
        Not wrapped in ``no_grad``: under grad the result keeps its graph to ``initial_noise``.
        ``checkpoint_steps=True`` recomputes each step's transformer call in backward
        (``torch.utils.checkpoint``; ignored when grad is disabled); the scheduler update stays outside the checkpoint because it is
        stateful (step index, multistep history, Brownian tree) and cheap.
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
        negative_prompt = [opts.negative_prompt] * batch_size if opts.negative_prompt else None

        with torch.no_grad():  # the conditioning does not depend on the noise
            # 2. Encode the prompts (T5 + projection; negative prompt first when given)
            prompt_embeds = pipe.encode_prompt(prompts, device, do_classifier_free_guidance, negative_prompt)
            # 3. Encode the duration [0, duration] seconds and build the cross-attention / global states
            seconds_start, seconds_end = pipe.encode_duration(
                0.0, opts.duration, device, do_classifier_free_guidance and negative_prompt is not None, batch_size)
            text_audio_duration_embeds = torch.cat([prompt_embeds, seconds_start, seconds_end], dim=1)
            audio_duration_embeds = torch.cat([seconds_start, seconds_end], dim=2)
            if do_classifier_free_guidance and negative_prompt is None:  # null unconditional embedding
                text_audio_duration_embeds = torch.cat(
                    [torch.zeros_like(text_audio_duration_embeds), text_audio_duration_embeds])
                audio_duration_embeds = torch.cat([audio_duration_embeds, audio_duration_embeds])

        # 4. Prepare timesteps on a fresh scheduler (keeps the pipeline's own scheduler untouched)
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        scheduler.set_timesteps(opts.steps, device=device)

        # 5. Prepare latent variables: the given noise, scaled as in prepare_latents
        latents = initial_noise.to(device=device, dtype=text_audio_duration_embeds.dtype)
        latents = latents * scheduler.init_noise_sigma

        # 6. Per-item generators: the scheduler seeds one Brownian tree per item from initial_seed()
        noise_generators = item_generators(noise_seeds, device)

        # 7. Prepare rotary positional embedding
        from diffusers.models.embeddings import get_1d_rotary_pos_embed

        rotary_embedding = get_1d_rotary_pos_embed(
            pipe.rotary_embed_dim, latents.shape[2] + audio_duration_embeds.shape[1],
            use_real=True, repeat_interleave_real=False)

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

        if not decode:
            return latents
        # 9. Post-processing: decode and crop to [0, duration)
        audio = pipe.vae.decode(latents).sample
        return audio[:, :, : int(opts.duration * self.sample_rate)]


def tiny_stable_audio(seed: int = 0):
    """A tiny random ``StableAudioPipeline`` of the real architecture (T5 encoder, projection model,
    DiT, Oobleck VAE at 44.1 kHz with 2048x downsampling, cosine DPM-Solver SDE scheduler), built
    in-process without the hub: 64 latent frames, a 2.97 s window. The caller's RNG is untouched."""
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    # A Unigram T5 tokenizer from a small vocabulary (no sentencepiece): whole words, then letters.
    words = sorted({w for line in _TINY_VOCAB_TEXT for w in line.split()})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0) for w in words] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=16)
    text_config = T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                           pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = T5EncoderModel(text_config).eval()
        projection_model = StableAudioProjectionModel(text_encoder_dim=32, conditioning_dim=16, min_value=0,
                                                      max_value=512)
        transformer = StableAudioDiTModel(
            sample_size=64, in_channels=8, num_layers=2, attention_head_dim=8, num_attention_heads=4,
            num_key_value_attention_heads=2, out_channels=8, cross_attention_dim=32, time_proj_dim=16,
            global_states_input_dim=32, cross_attention_input_dim=16)
        with warnings.catch_warnings():  # Oobleck still uses torch.nn.utils.weight_norm
            warnings.filterwarnings("ignore", category=FutureWarning)
            vae = AutoencoderOobleck(encoder_hidden_size=16, downsampling_ratios=[2, 4, 4, 8, 8],  # 8 latent ch.
                                     channel_multiples=[1, 2, 2, 4, 4], decoder_channels=4,
                                     decoder_input_channels=8, audio_channels=2, sampling_rate=44_100)
    scheduler = CosineDPMSolverMultistepScheduler(sigma_min=0.3, sigma_max=500, sigma_data=1.0,
                                                  sigma_schedule="exponential", solver_order=2,
                                                  prediction_type="v_prediction")
    return StableAudioPipeline(vae=vae, text_encoder=text_encoder, projection_model=projection_model,
                               tokenizer=tokenizer, transformer=transformer, scheduler=scheduler)


_TINY_VOCAB_TEXT = [
    "high quality instrumental music lofi hip hop beat with warm piano chords",
    "upbeat electronic dance track epic orchestral soundtrack with brass and drums",
    "a calm acoustic guitar melody with soft strings jazz trio double bass brushed",
    "ambient synth pad slow and spacious rock metal pop funk the of hammer hitting wooden surface",
]


def debug_stable_audio(seed: int = 0) -> StableAudioGenerator:
    """:func:`tiny_stable_audio` as a generator whose ``default_options`` are 4 steps and 2 s clips."""
    return StableAudioGenerator(tiny_stable_audio(seed), name="debug-stable-audio", is_debug=True,
                                default_options={"steps": 4, "duration": 2.0})
