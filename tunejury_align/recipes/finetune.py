"""The generator families' own training losses, for expert iteration's fine-tuning step.

A trainer wraps a generator adapter and gives: the training targets of generated audio
(:meth:`encode`, run once per sample, under ``no_grad``), the family's ordinary training loss on a
batch of targets (:meth:`loss`), the parameters to train, and checkpointing in the library's own
format (``save_pretrained`` / ``from_pretrained``). Randomness inside a loss (condition dropout,
diffusion time and noise) is drawn per sample from ``torch.Generator(seed_i)``: a sample's draws do
not depend on which process or micro-batch it lands in.

* MusicGen (Copet et al., 2023, arXiv 2306.05284): the kept audio is encoded with the model's own
  EnCodec (first ``num_codebooks`` residual codebooks); the loss is transformers'
  ``MusicgenForConditionalGeneration(labels=...)`` teacher-forced cross-entropy, averaged over
  codebooks, on labels laid out in MusicGen's delay pattern (codebook k shifted by k steps, the
  other positions ``pad_token_id``, which the loss ignores) -- the layout ``generate`` produces.
* Stable Audio Open (Evans et al., 2024, arXiv 2407.14358): the kept audio, zero-padded to the
  model's window, is encoded to the VAE posterior mean; the loss is the v-objective of
  stable-audio-tools' ``DiffusionCondTrainingWrapper`` (the code Stable Audio Open was trained with):
  ``t ~ U[0, 1)`` (1 % of items set to ``t = 1``), ``alpha, sigma = cos(pi t / 2), sin(pi t / 2)``,
  DiT input ``alpha x0 + sigma eps`` at timestep ``t``, target ``v = alpha eps - sigma x0``, MSE.
  In diffusers' terms (``CosineDPMSolverMultistepScheduler``, ``sigma_data = 1``, v-prediction) this
  is the noise level ``s = tan(pi t / 2)``: ``precondition_inputs(x0 + s eps, s)`` is the DiT input,
  ``precondition_noise(s) = t`` its timestep, and ``precondition_outputs(x0 + s eps, v, s) = x0``.

Both drop the text condition of 10 % of items by default (``condition_dropout``), as both were
trained, so the unconditional branch that classifier-free guidance uses keeps being trained: MusicGen
items get the all-zero encoder states and attention mask of ``generate``'s null input, Stable Audio
items the all-zero cross-attention states of the sampler's null embedding.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn


def sample_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]


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


class _Trainer:
    """Shared parts: parameter selection and train/eval switching over ``self.root``."""

    family = ""
    default_trainable: tuple[str, ...] = ()
    untrainable: tuple[str, ...] = ()
    root: nn.Module

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


class MusicGenTrainer(_Trainer):
    """Teacher-forced token loss of a transformers ``MusicgenForConditionalGeneration``."""

    family = "musicgen"
    default_trainable = (r"^decoder\.", r"^enc_to_dec_proj\.")
    untrainable = (r"^audio_encoder\.",)

    def __init__(self, generator, trainable: Sequence[str] | None = None):
        if type(generator.model).__name__ != "MusicgenForConditionalGeneration":
            raise TypeError(f"expert iteration trains MusicgenForConditionalGeneration, not "
                            f"{type(generator.model).__name__} (MusicGen-melody is not supported)")
        self.generator, self.model, self.root = generator, generator.model, generator.model
        decoder = self.model.config.decoder
        if decoder.decoder_start_token_id is None or decoder.pad_token_id is None:
            raise ValueError("the MusicGen decoder config needs decoder_start_token_id and pad_token_id for training")
        self.pad_token_id = int(decoder.pad_token_id)
        self.num_codebooks = int(decoder.num_codebooks)
        self.stereo = int(getattr(decoder, "audio_channels", 1)) == 2
        self._select(trainable)

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` audio at the model's rate -> ``(B, K, L)`` int32 EnCodec codes (stereo
        models: left/right codebooks interleaved, as ``generate`` decodes them)."""
        audio = audio.to(self.device, torch.float32)
        channels = [audio[:, :1], audio[:, 1:2]] if self.stereo else [audio[:, :1]]
        per_channel = self.num_codebooks // len(channels)
        codes = []
        for wave in channels:
            out = self.model.audio_encoder.encode(wave)
            if out.audio_codes.shape[0] != 1 or out.audio_codes.shape[2] < per_channel:
                raise ValueError(f"EnCodec gave codes of shape {tuple(out.audio_codes.shape)}; need 1 chunk and "
                                 f">= {per_channel} codebooks")
            codes.append(out.audio_codes[0, :, :per_channel])  # residual VQ: a prefix of the codebooks
        if self.stereo:
            return torch.stack(codes, dim=2).flatten(1, 2).to(torch.int32).cpu()  # (B, K/2, 2, L) -> (B, K, L)
        return codes[0].to(torch.int32).cpu()

    def delayed_labels(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, K, L)`` codes -> ``(B, L + D, K)`` labels in the delay pattern (``D`` = the largest
        delay, ``K - 1`` mono, ``K / 2 - 1`` stereo): ``labels[:, k + d_k + t, k]`` = code ``t`` of
        codebook ``k``, everything else ``pad_token_id``. The model shifts them right behind
        ``decoder_start_token_id``, so the decoder sees exactly what ``generate`` feeds it."""
        batch, num_codebooks, length = codes.shape
        delays = [k // 2 if self.stereo else k for k in range(num_codebooks)]
        labels = torch.full((batch, num_codebooks, length + max(delays)), self.pad_token_id, dtype=torch.long,
                            device=codes.device)
        for k, delay in enumerate(delays):
            labels[:, k, delay:delay + length] = codes[:, k]
        return labels.transpose(1, 2)

    def loss(self, targets: torch.Tensor, texts: Sequence[str], seeds: Sequence[int],
             condition_dropout: float = 0.0) -> torch.Tensor:
        """Mean cross-entropy over codebooks and frames of ``(B, K, L)`` codes given ``texts``."""
        device = self.device
        keep = torch.tensor([float(torch.rand(1, generator=g).item() >= condition_dropout)
                             for g in sample_generators(seeds)], device=device)
        inputs = self.generator.tokenizer(list(texts), padding=True, return_tensors="pt").to(device)
        hidden = self.model.text_encoder(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask)[0]
        attention_mask = inputs.attention_mask * keep[:, None].long()
        labels = self.delayed_labels(targets.to(device=device, dtype=torch.long))
        out = self.model(attention_mask=attention_mask, encoder_outputs=(hidden * keep[:, None, None],),
                         labels=labels, use_cache=False)
        return out.loss

    def save_pretrained(self, path: Path) -> None:
        self.model.save_pretrained(path)
        self.generator.tokenizer.save_pretrained(path)

    def load_pretrained(self, path: Path) -> None:
        loaded = type(self.model).from_pretrained(path, torch_dtype=next(self.model.parameters()).dtype)
        self.model.load_state_dict(loaded.state_dict())


class StableAudioTrainer(_Trainer):
    """v-objective diffusion loss of a diffusers ``StableAudioPipeline``'s DiT."""

    family = "stable-audio"
    default_trainable = (r"^transformer\.",)
    untrainable = (r"^vae\.",)
    terminal_fraction = 0.01  # items trained at t = 1 (stable-audio-tools' terminal-SNR share)

    def __init__(self, generator, trainable: Sequence[str] | None = None, duration: float | None = None):
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
        self.duration = generator.options().duration if duration is None else float(duration)
        self._select(trainable)

    @property
    def window(self) -> int:
        """Samples in the model's window: ``sample_size`` latent frames of ``vae.hop_length``."""
        return int(self.pipe.transformer.config.sample_size * self.pipe.vae.hop_length)

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` audio -> ``(B, C_latent, sample_size)`` VAE posterior means of the audio
        zero-padded (or cropped) to the window the pipeline always denoises."""
        audio = audio[..., : self.window]
        audio = nn.functional.pad(audio, (0, self.window - audio.shape[-1]))
        vae = self.pipe.vae
        return vae.encode(audio.to(self.device, vae.dtype)).latent_dist.mean.float().cpu()

    def conditioning(self, texts: Sequence[str], keep: torch.Tensor):
        """(cross-attention states, global states, rotary embedding) as ``StableAudioGenerator.sample``
        builds them; dropped items get the all-zero (null) cross-attention states."""
        from diffusers.models.embeddings import get_1d_rotary_pos_embed

        pipe, device = self.pipe, self.device
        prompt_embeds = pipe.encode_prompt(list(texts), device, False)
        seconds_start, seconds_end = pipe.encode_duration(0.0, self.duration, device, False, len(texts))
        cross = torch.cat([prompt_embeds, seconds_start, seconds_end], dim=1) * keep[:, None, None]
        global_states = torch.cat([seconds_start, seconds_end], dim=2)
        rotary = get_1d_rotary_pos_embed(pipe.rotary_embed_dim, pipe.transformer.config.sample_size +
                                         global_states.shape[1], use_real=True, repeat_interleave_real=False)
        return cross, global_states, rotary

    def draws(self, seeds: Sequence[int], latent_shape, condition_dropout: float):
        """Per item from ``torch.Generator(seed)``: ``t (B,)``, ``noise (B, *latent_shape)``, ``keep (B,)``."""
        times, noises, keeps = [], [], []
        for g in sample_generators(seeds):
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
        cross, global_states, rotary = self.conditioning(texts, keep)
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


TRAINERS = {"musicgen": MusicGenTrainer, "stable-audio": StableAudioTrainer}


def trainer_for(generator, trainable: Sequence[str] | None = None, generation: dict | None = None):
    """The trainer of ``generator``'s family (``generator.family``); ``generation``: the run's
    generation options (Stable Audio conditions its loss on their ``duration``)."""
    family = getattr(generator, "family", None)
    if family not in TRAINERS:
        raise TypeError(f"expert iteration fine-tunes {sorted(TRAINERS)} generators, not "
                        f"{family or type(generator).__name__}")
    if family == "stable-audio":
        return StableAudioTrainer(generator, trainable, duration=generator.options(**(generation or {})).duration)
    return TRAINERS[family](generator, trainable)


class LossModule(nn.Module):
    """``forward(targets, texts, seeds) -> loss``: the trainer's loss as a module, so that DDP
    (``accelerator.prepare_model``) can wrap it and average the gradients across processes."""

    def __init__(self, trainer, condition_dropout: float):
        super().__init__()
        self.root = trainer.root
        self.trainer, self.condition_dropout = trainer, condition_dropout

    def forward(self, targets: torch.Tensor, texts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        return self.trainer.loss(targets, texts, seeds, self.condition_dropout)
