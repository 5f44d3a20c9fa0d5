"""AudioLDM 2 (Liu et al., 2024, arXiv 2308.05734) through diffusers' ``AudioLDM2Pipeline``.

``cvssp/audioldm2-music`` (16 kHz mono) by hub id, or a local folder saved with ``save_pretrained``.

Sampling runs our own unrolled DDIM loop (eta = 0, so deterministic given the initial latents) over
the pipeline's public modules, mirroring ``AudioLDM2Pipeline.__call__``. It is differentiable with
respect to the initial noise, which DITTO (Novack et al., 2024, arXiv 2401.12179) optimises.

Per-candidate seeding: the initial latents come from per-item ``torch.Generator``s, and each
unique prompt is encoded on its own. (The pipeline pads T5 tokens to the longest prompt in the
batch, and GPT-2 numbers positions without looking at padding. Batched encoding would therefore
make candidate i depend on the other prompts in its batch.) The T5 states are then zero-padded,
with their attention mask zeroed, to a common length; the UNet's cross-attention ignores them.

GPT-2: the pipeline's ``generate_language_model`` calls ``GenerationMixin`` methods that the
``GPT2Model`` stored in the cvssp checkpoints lacks under transformers 5 (diffusers issue #12630).
We run the same 8-step continuation ourselves, without a KV cache: each new hidden state is the
last hidden state of a full forward pass. The positions are the same, so the result is the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from ..tiny_tokenizers import DEBUG_CORPUS, tiny_roberta_tokenizer, tiny_t5_tokenizer, words_of
from .base import Family, check_generated, check_request, item_generators, library_versions, load_diffusers_pipeline


@dataclass
class AudioLDM2Options:
    """Sampling options (defaults: the published best-of-N settings)."""

    steps: int = 200  # DDIM denoising steps
    guidance_scale: float = 3.5  # classifier-free guidance weight; <= 1 disables guidance
    duration: float = 10.0  # seconds of audio per candidate
    negative_prompt: str = ""  # unconditional text for guidance ("" = the pipeline's default)
    max_batch_size: int = 4  # most candidates per sampling call in generate()

    def __post_init__(self):
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.duration <= 0:
            raise ValueError(f"duration must be > 0 seconds, got {self.duration}")
        if not isinstance(self.negative_prompt, str):
            raise TypeError(f"negative_prompt must be a string, got {type(self.negative_prompt).__name__}")
        if int(self.max_batch_size) != self.max_batch_size or self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an integer >= 1, got {self.max_batch_size}")
        self.steps, self.max_batch_size = int(self.steps), int(self.max_batch_size)


@dataclass
class _Conditioning:
    """Text conditioning for one batch. With guidance, the rows are ``[unconditional; conditional]``."""

    t5_embeds: torch.Tensor  # (B or 2B, L, D_t5): the UNet's encoder_hidden_states_1
    t5_mask: torch.Tensor  # (B or 2B, L) long
    generated_embeds: torch.Tensor  # (B or 2B, N, D_gpt2): GPT-2 states, the UNet's encoder_hidden_states
    guidance_scale: float


class AudioLDM2Generator:
    """AudioLDM 2 adapter: ``generate(prompts, seeds, **options) -> (B, 1, T)`` at ``sample_rate``.

    ``default_options`` overrides :class:`AudioLDM2Options` defaults for this generator; the debug
    generator uses it to sample with 2 steps and 1 s of audio. The pipeline's networks are set to
    ``eval()`` and frozen (``requires_grad_(False)``). Only the noise is optimised, so no parameter
    gradients are stored.
    """

    family = "audioldm2"
    options_class = AudioLDM2Options

    def __init__(self, pipe, name: str, is_debug: bool = False, default_options: dict | None = None):
        from diffusers import DDIMScheduler
        from transformers import VitsModel

        if not isinstance(pipe.scheduler, DDIMScheduler):
            raise ValueError(
                f"AudioLDM2Generator samples with DDIM (eta=0); the pipeline holds {type(pipe.scheduler).__name__}. "
                "Set `pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)` first."
            )
        if pipe.scheduler.config.thresholding:
            raise ValueError("DDIM dynamic thresholding is not supported by the unrolled loop")
        if isinstance(pipe.text_encoder_2, VitsModel):
            raise ValueError("text-to-speech AudioLDM 2 checkpoints (VITS text encoder) are not supported")
        self.pipe = pipe
        for module in (pipe.text_encoder, pipe.text_encoder_2, pipe.projection_model, pipe.language_model,
                       pipe.unet, pipe.vae, pipe.vocoder):
            module.eval().requires_grad_(False)
        self.name = name
        self.is_debug = is_debug
        self.sample_rate = int(pipe.vocoder.config.sampling_rate)
        self.default_options = dict(default_options or {})
        AudioLDM2Options(**self.default_options)  # fail early on a bad default

    @classmethod
    def from_pretrained(cls, name: str, device=None, dtype=None) -> AudioLDM2Generator:
        """Load ``AudioLDM2Pipeline`` from a hub id (e.g. ``cvssp/audioldm2-music``) or a local folder."""

        from diffusers import AudioLDM2Pipeline

        pipe = load_diffusers_pipeline(AudioLDM2Pipeline, name, "AudioLDM 2", dtype)
        generator = cls(pipe, name)
        return generator.to(device) if device else generator

    @classmethod
    def from_pipeline(cls, pipe, name: str = "audioldm2") -> AudioLDM2Generator:
        """Wrap an ``AudioLDM2Pipeline`` the caller already holds (its networks get frozen)."""
        return cls(pipe, name)

    def to(self, device) -> AudioLDM2Generator:
        self.pipe.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device

    def info(self) -> dict:
        return {"generator": self.name, "family": self.family, "debug": self.is_debug,
                "sample_rate": self.sample_rate, "versions": library_versions("diffusers", "transformers")}

    def options(self, **overrides) -> AudioLDM2Options:
        """:class:`AudioLDM2Options` from this generator's ``default_options`` updated with ``overrides``."""
        return AudioLDM2Options(**{**self.default_options, **overrides})

    def latent_shape(self, duration: float) -> tuple[int, int, int]:
        """``(C, H, W)`` of the latents for ``duration`` seconds (the pipeline's step 0 and 5)."""
        pipe = self.pipe
        seconds_per_frame = math.prod(pipe.vocoder.config.upsample_rates) / pipe.vocoder.config.sampling_rate
        scale = pipe.vae_scale_factor
        if duration < seconds_per_frame * scale:
            raise ValueError(f"duration must be >= {seconds_per_frame * scale} s for this model, got {duration}")
        height = int(duration / seconds_per_frame)  # mel frames, rounded up to a multiple of the VAE's scale
        height = int(math.ceil(height / scale)) * scale
        return pipe.unet.config.in_channels, height // scale, int(pipe.vocoder.config.model_in_dim) // scale

    def initial_noise(self, seeds: Sequence[int], duration: float | None = None) -> torch.Tensor:
        """``(B,)`` seeds -> ``(B, C, H, W)`` standard-normal latents, item i drawn from seed i alone
        (on the CPU, so the same on every device), returned on :attr:`device` in the UNet's dtype."""
        shape = self.latent_shape(self.options().duration if duration is None else duration)
        noise = torch.stack([torch.randn(shape, generator=g) for g in item_generators(seeds)])
        return noise.to(device=self.device, dtype=self.pipe.unet.dtype)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seeds: Sequence[int], **options) -> torch.Tensor:
        """``prompts``/``seeds`` (B each) -> ``(B, 1, T)`` float32 audio in [-1, 1] on the CPU;
        options: :class:`AudioLDM2Options` (over this generator's defaults)."""
        opts = self.options(**options)
        prompts, seeds = check_request(prompts, seeds)
        audios = []
        for start in range(0, len(prompts), opts.max_batch_size):
            chunk_prompts = prompts[start:start + opts.max_batch_size]
            chunk_seeds = seeds[start:start + opts.max_batch_size]
            audio = self.sample(chunk_prompts, self.initial_noise(chunk_seeds, opts.duration), options=opts)
            audios.append(check_generated(audio.clamp(-1.0, 1.0), len(chunk_prompts), self.name))
        return torch.cat(audios)

    def sample(self, prompts: Sequence[str], initial_noise: torch.Tensor, *, options: AudioLDM2Options | None = None,
               checkpoint_steps: bool = False, decode: bool = True, steering=None) -> torch.Tensor:
        """Unrolled DDIM sampling (eta = 0) from given initial latents.

        ``prompts`` (B,), ``initial_noise`` ``(B, C, H, W)`` (see :meth:`initial_noise`) ->
        ``(B, 1, T)`` float32 waveform (not clamped; T = duration * sample_rate) or, with
        ``decode=False``, the final latents ``(B, C, H, W)``. Under grad it is differentiable
        with respect to ``initial_noise``. ``checkpoint_steps`` recomputes each denoising step in
        backward instead of storing its activations. ``steering`` (particle steering,
        :mod:`..recipes.smc_particles`) sees the scheduler before the loop, sets each step's DDIM eta and
        per-item noise, and after each step gets the latents and the x0 prediction and returns the latents to go on.

        Mirrors ``diffusers.AudioLDM2Pipeline.__call__`` (diffusers 0.42) with ``latents=initial_noise``,
        ``num_waveforms_per_prompt=1`` and ``eta=0``.
        """
        pipe = self.pipe
        opts = options if options is not None else self.options()
        prompts = [str(p) for p in prompts]
        # 1. Check inputs
        if not prompts:
            raise ValueError("nothing to sample: empty prompt list")
        expected = (len(prompts), *self.latent_shape(opts.duration))
        if tuple(initial_noise.shape) != expected:
            raise ValueError(f"initial_noise has shape {tuple(initial_noise.shape)}, expected {expected} for "
                             f"{len(prompts)} prompts and {opts.duration} s")
        # 2. Encode the prompts (no grad: only the noise is optimised)
        conditioning = self.encode_prompts(prompts, opts)
        # 3. Prepare timesteps
        pipe.scheduler.set_timesteps(opts.steps, device=self.device)
        # 4. Prepare latent variables
        latents = initial_noise.to(device=self.device, dtype=conditioning.t5_embeds.dtype)
        latents = latents * pipe.scheduler.init_noise_sigma
        if steering is not None:
            steering.start(pipe.scheduler, latents)
        # 5. Denoising loop; with checkpointing only each step's input latents are kept
        for t in pipe.scheduler.timesteps:
            if checkpoint_steps and torch.is_grad_enabled():
                latents = checkpoint(lambda x, t=t: self._denoise_step(x, t, conditioning), latents,
                                     use_reentrant=False)
            else:
                latents = self._denoise_step(latents, t, conditioning, steering)
        if not decode:
            return latents
        return self.decode_latents(latents, opts.duration)

    def decode_latents(self, latents: torch.Tensor, duration: float, frames: int | None = None) -> torch.Tensor:
        """``(B, C, H, W)`` latents -> ``(B, 1, T)`` waveform cut to ``duration`` seconds; ``frames`` decodes only
        the first latent frames (a cheaper, approximate decode for particle steering's intermediate scores)."""
        pipe = self.pipe
        latents = latents if frames is None else latents[:, :, :frames]
        # 6. Post-processing: VAE decode to a log-mel spectrogram (B, 1, frames, mel bins)
        mel_spectrogram = pipe.vae.decode(1 / pipe.vae.config.scaling_factor * latents).sample
        # 7. Vocoder: mel -> waveform (B, samples), cut to the requested duration
        waveform = pipe.vocoder(mel_spectrogram.squeeze(1)).float()
        return waveform[:, None, :int(duration * self.sample_rate)]

    def _denoise_step(self, latents: torch.Tensor, t: torch.Tensor, conditioning: _Conditioning,
                      steering=None) -> torch.Tensor:
        """One guided UNet call and DDIM update: ``(B, C, H, W)`` latents at t -> latents at t - 1."""
        pipe, guidance = self.pipe, conditioning.guidance_scale
        model_input = torch.cat([latents] * 2) if guidance > 1.0 else latents
        model_input = pipe.scheduler.scale_model_input(model_input, t)
        noise_pred = pipe.unet(model_input, t, encoder_hidden_states=conditioning.generated_embeds,
                               encoder_hidden_states_1=conditioning.t5_embeds,
                               encoder_attention_mask_1=conditioning.t5_mask, return_dict=False)[0]
        if guidance > 1.0:
            noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
            noise_pred = noise_pred_uncond + guidance * (noise_pred_text - noise_pred_uncond)
        if steering is None:
            return pipe.scheduler.step(noise_pred, t, latents, eta=0.0, return_dict=False)[0]  # DDIM, eq. 12
        eta, variance_noise = steering.ddim_noise(latents)  # eta > 0: per-particle seeded noise
        step = pipe.scheduler.step(noise_pred, t, latents, eta=eta, variance_noise=variance_noise)
        return steering.step(step.prev_sample, step.pred_original_sample, pipe.scheduler)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str], options: AudioLDM2Options) -> _Conditioning:
        """Each unique prompt (and its negative prompt) encoded on its own (the pipeline's
        ``encode_prompt`` for one prompt), then stacked; T5 states zero-padded, masked, to one length."""
        guided = options.guidance_scale > 1.0
        cache: dict[tuple[str, int | None], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

        def encode(text: str, t5_length: int | None = None):
            if (text, t5_length) not in cache:
                cache[text, t5_length] = self._encode_text(text, t5_length)
            return cache[text, t5_length]

        rows = [encode(p) for p in prompts]
        if guided:  # the negative is padded to its prompt's T5 length, as the pipeline does
            rows = [encode(options.negative_prompt, row[0].shape[1]) for row in rows] + rows
        length = max(row[0].shape[1] for row in rows)
        t5_embeds = torch.cat([torch.nn.functional.pad(row[0], (0, 0, 0, length - row[0].shape[1])) for row in rows])
        t5_mask = torch.cat([torch.nn.functional.pad(row[1], (0, length - row[1].shape[1])) for row in rows])
        generated = torch.cat([row[2] for row in rows])
        return _Conditioning(t5_embeds, t5_mask, generated, options.guidance_scale)

    def _encode_text(self, text: str, t5_length: int | None):
        """One text -> (T5 states (1, L, D_t5), mask (1, L), GPT-2 states (1, N, D_gpt2)).
        ``t5_length`` pads/truncates T5 tokens to that length (the negative prompt's rule)."""
        pipe, device = self.pipe, self.device
        # CLAP text branch: one pooled, projected embedding (1, 1, D_clap)
        clap_inputs = pipe.tokenizer([text], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                     truncation=True, return_tensors="pt").to(device)
        clap_embeds = pipe.text_encoder.get_text_features(clap_inputs.input_ids,
                                                          attention_mask=clap_inputs.attention_mask)
        if hasattr(clap_embeds, "pooler_output"):  # transformers 5 returns a model output
            clap_embeds = clap_embeds.pooler_output
        clap_embeds = clap_embeds[:, None, :]
        clap_mask = clap_inputs.attention_mask.new_ones((1, 1))
        # T5 encoder: (1, L, D_t5)
        t5_inputs = pipe.tokenizer_2([text], padding=True if t5_length is None else "max_length",
                                     max_length=pipe.tokenizer_2.model_max_length if t5_length is None else t5_length,
                                     truncation=True, return_tensors="pt").to(device)
        t5_embeds = pipe.text_encoder_2(t5_inputs.input_ids, attention_mask=t5_inputs.attention_mask)[0]
        # Projection (adds SOS/EOS embeddings) and GPT-2 continuation
        projected = pipe.projection_model(hidden_states=clap_embeds, hidden_states_1=t5_embeds,
                                          attention_mask=clap_mask, attention_mask_1=t5_inputs.attention_mask)
        generated = self._generate_language_model(projected.hidden_states, projected.attention_mask)
        return (t5_embeds.to(pipe.text_encoder_2.dtype), t5_inputs.attention_mask,
                generated.to(pipe.language_model.dtype))

    def _generate_language_model(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``AudioLDM2Pipeline.generate_language_model`` without a KV cache: ``(B, S, D)`` ->
        ``(B, max_new_tokens, D)`` GPT-2 last hidden states, each appended to the input in turn."""
        language_model = self.pipe.language_model
        max_new_tokens = language_model.config.max_new_tokens
        transformer = language_model.base_model  # the GPT2Model in both GPT2Model and GPT2LMHeadModel
        for _ in range(max_new_tokens):
            hidden = transformer(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False,
                                 return_dict=True).last_hidden_state
            inputs_embeds = torch.cat([inputs_embeds, hidden[:, -1:, :]], dim=1)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=1)
        return inputs_embeds[:, -max_new_tokens:, :]


def tiny_audioldm2(seed: int = 0, vocoder_channels: int = 32):
    """A tiny random ``AudioLDM2Pipeline`` of the real architecture, built in-process without the hub.

    It has a CLAP text+audio model, a T5 encoder, a GPT2Model (the class the cvssp checkpoints hold),
    the projection model, a 2-block UNet, a 2x VAE and a SpeechT5HifiGan vocoder. Audio is 16 kHz,
    with 100 mel frames/s and 16 mel bins, so 1 s gives latents ``(B, 4, 50, 8)``. The component
    configs follow diffusers' ``get_dummy_components`` and the DDIM config is cvssp's. The
    vocoder's convolutions use PyTorch's default init, so audio peaks near 0.1 rather than 1e-6.
    """
    from diffusers import (
        AudioLDM2Pipeline,
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
        AutoencoderKL,
        DDIMScheduler,
    )
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2Model,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        T5Config,
        T5EncoderModel,
    )

    tokenizer = tiny_roberta_tokenizer()  # byte-level BPE, trained in-process
    tokenizer.model_max_length = 32
    tokenizer_2 = tiny_t5_tokenizer(words_of(DEBUG_CORPUS), space_score=-3.0, max_length=32)  # Unigram
    scheduler = DDIMScheduler(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading",
                              prediction_type="epsilon")
    text_config = ClapTextConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1, vocab_size=len(tokenizer),
                                 hidden_size=16, intermediate_size=37, num_attention_heads=2, num_hidden_layers=2,
                                 projection_dim=16, max_position_embeddings=40, layer_norm_eps=1e-5)
    audio_config = ClapAudioConfig(spec_size=64, window_size=4, num_mel_bins=64, intermediate_size=37, depths=[2, 2],
                                   num_attention_heads=[2, 2], num_hidden_layers=2, hidden_size=192, projection_dim=16,
                                   patch_size=2, patch_stride=2, patch_embed_input_channels=4, layer_norm_eps=1e-5)
    vocoder_config = SpeechT5HifiGanConfig(model_in_dim=16, sampling_rate=16_000, upsample_initial_channel=vocoder_channels,
                                           upsample_rates=[8, 5, 4], upsample_kernel_sizes=[16, 10, 8],
                                           resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
                                           normalize_before=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = AudioLDM2UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, sample_size=50, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=([None, 16, 32], [None, 16, 32]),  # [self, GPT-2 (16), T5 (32)]
        )
        vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=1, out_channels=1, latent_channels=4,
                            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
        text_encoder = ClapModel(ClapConfig(text_config=text_config.to_dict(), audio_config=audio_config.to_dict(),
                                            projection_dim=16))
        text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), d_model=32, d_ff=37, d_kv=8, num_heads=2,
                                                 num_layers=2))
        language_model = GPT2Model(GPT2Config(n_embd=16, n_head=2, n_layer=2, vocab_size=8, n_positions=99,
                                              bos_token_id=0, eos_token_id=0))
        language_model.config.max_new_tokens = 8
        projection_model = AudioLDM2ProjectionModel(text_encoder_dim=16, text_encoder_1_dim=32, langauge_model_dim=16)
        vocoder = SpeechT5HifiGan(vocoder_config)
        for module in vocoder.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                module.reset_parameters()
    pipe = AudioLDM2Pipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                             projection_model=projection_model, language_model=language_model, tokenizer=tokenizer,
                             tokenizer_2=tokenizer_2, feature_extractor=ClapFeatureExtractor(), unet=unet,
                             scheduler=scheduler, vocoder=vocoder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def debug_audioldm2(seed: int = 0) -> AudioLDM2Generator:
    """The debug world's AudioLDM 2: :func:`tiny_audioldm2` with the VAE decoder's biases at zero (its
    mel output then follows the latents), the UNet's output scaled by 0.3 and a HiFi-GAN vocoder voiced
    so that groups of mel bins play their own spectral envelopes (:mod:`.voicing`). 2 DDIM steps and 1 s
    of audio by default."""
    from .voicing import voice_hifigan

    pipe = tiny_audioldm2(seed, vocoder_channels=64)  # two channels a path at the last stage (push-pull voicing)
    with torch.no_grad():
        for module in pipe.vae.decoder.modules():
            if isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                module.bias.zero_()
        pipe.unet.conv_out.weight.mul_(0.3)
        pipe.unet.conv_out.bias.mul_(0.3)
    voice_hifigan(pipe.vocoder, frame_rate=pipe.vocoder.config.sampling_rate / math.prod(
        pipe.vocoder.config.upsample_rates), gain=0.015)
    return AudioLDM2Generator(pipe, name="debug-audioldm2", is_debug=True,
                              default_options={"steps": 2, "duration": 1.0})


FAMILY = Family(
    name="audioldm2", summary="AudioLDM 2 (cvssp/audioldm2-music), diffusers",
    adapter=AudioLDM2Generator, debug=debug_audioldm2, pipeline_classes=("AudioLDM2Pipeline",))
