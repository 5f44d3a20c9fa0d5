"""Designed weights for the debug models' audio decoders, so that what they play varies audibly.

A random tiny decoder (EnCodec, Oobleck, HiFi-GAN) ignores its input: its biases and random filters
impose one fixed, mostly >4 kHz spectrum whatever the codes or latents (measured: octave-band levels
identical to 0.1 dB across seeds). The debug world (:mod:`tunejury_align.debug`) needs generators whose
output moves with the seed / initial noise, so the debug builders keep each library's architecture and
code path and set the decoder's weights as a small synthesizer:

* biases zero, residual branches zero (identity blocks), LSTM branch zero (EnCodec's LSTM is residual);
* the upsampling stack split into ``P`` separate paths (one channel each): path ``p`` upsamples one
  input channel (EnCodec: one code-embedding coordinate; Oobleck: one latent channel; HiFi-GAN: a group
  of mel bins) with Hann-windowed cosine kernels at frequency ``f_p`` at every stage, so the composite
  response is a harmonic tone whose spectral envelope peaks near ``f_p``;
* the last convolution sums the paths (with a gain that puts typical levels near -20 dBFS).

The spectral envelope of the output is then set by the energies of the input channels: which code a
MusicGen stream holds (its language model is made sticky, so a stream holds a code for about a second),
or how the initial noise's energy falls across latent channels (Stable Audio; smoothed over 7 latent
frames so that a clip is not an average of dozens of independent frames). See ``debug_*`` in each
family module for what each one changes.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def set_conv_weight(module: nn.Module, weight: torch.Tensor, bias: float | torch.Tensor = 0.0) -> None:
    """Set ``module``'s effective weight to ``weight`` exactly (plain, ``torch.nn.utils.weight_norm``
    or ``parametrizations.weight_norm`` convolutions) and its bias (if any) to ``bias``."""
    weight = weight.to(torch.float32)
    dims = tuple(range(1, weight.dim()))
    norm = weight.norm(dim=dims, keepdim=True)
    direction = torch.where(norm > 0, weight, torch.full_like(weight, 1e-6))  # a zero row must stay finite
    with torch.no_grad():
        parametrizations = getattr(module, "parametrizations", None)
        if parametrizations is not None and "weight" in parametrizations:
            parametrizations.weight.original0.copy_(norm)
            parametrizations.weight.original1.copy_(direction)
        elif hasattr(module, "weight_g"):
            module.weight_g.copy_(norm)
            module.weight_v.copy_(direction)
        else:
            module.weight.copy_(weight)
        if getattr(module, "bias", None) is not None:
            module.bias.copy_(torch.as_tensor(bias, dtype=module.bias.dtype).expand_as(module.bias))


def tone_kernel(length: int, frequency: float, rate: float) -> torch.Tensor:
    """``(length,)`` Hann-windowed cosine at ``frequency`` Hz for a kernel running at ``rate`` Hz,
    scaled to unit absolute sum."""
    n = torch.arange(length, dtype=torch.float64) - (length - 1) / 2
    window = torch.hann_window(length + 2, periodic=False, dtype=torch.float64)[1:-1]
    kernel = window * torch.cos(2 * math.pi * frequency * n / rate)
    return (kernel / kernel.abs().sum()).float()


def path_kernels(conv: nn.Module, frequencies, rate: float) -> torch.Tensor:
    """Weights for an upsampling (transposed) convolution that keeps ``len(frequencies)`` separate paths:
    path ``p`` maps input channel ``p`` to output channel ``p`` with a tone kernel at ``frequencies[p]``
    (``rate``: the convolution's output rate), gain ``stride`` so that levels stay put; zeros elsewhere."""
    weight = torch.zeros_like(conv.weight)
    stride, length = conv.stride[0], conv.kernel_size[0]
    for p, frequency in enumerate(frequencies):
        weight[p, p] = tone_kernel(length, frequency, rate) * stride
    return weight


def identity_kernel(conv: nn.Module, paths: int, taps: str = "center") -> torch.Tensor:
    """Weights mapping input channel ``p`` to output channel ``p`` for ``p < paths``: one centre tap
    (``taps="center"``) or a moving average over the whole kernel (``taps="mean"``)."""
    weight = torch.zeros_like(conv.weight)
    length = conv.kernel_size[0]
    for p in range(paths):
        if taps == "center":
            weight[p, p, length // 2] = 1.0
        else:
            weight[p, p, :] = 1.0 / math.sqrt(length)
    return weight


# -- the three decoders -------------------------------------------------------------------------
ENCODEC_FREQUENCIES = (150.0, 500.0, 1200.0, 3000.0)
OOBLECK_FREQUENCIES = (110.0, 220.0, 400.0, 700.0, 1100.0, 1700.0, 2600.0, 4000.0)
HIFIGAN_FREQUENCIES = (200.0, 600.0, 1500.0, 3500.0)


@torch.no_grad()
def voice_encodec_decoder(decoder: nn.Module, frame_rate: float, gain: float,
                          frequencies=ENCODEC_FREQUENCIES) -> None:
    """transformers' ``EncodecDecoder``: code-embedding coordinate ``p`` drives path ``p``."""
    layers, paths, rate = decoder.layers, len(frequencies), float(frame_rate)
    for layer in layers:
        if type(layer).__name__ == "EncodecConv1d":
            first = layer
            break
    set_conv_weight(first.conv, identity_kernel(first.conv, paths))
    for layer in layers:
        kind = type(layer).__name__
        if kind == "EncodecLSTM":  # residual: a zero LSTM passes its input through
            for parameter in layer.lstm.parameters():
                parameter.zero_()
        elif kind == "EncodecConvTranspose1d":
            rate *= layer.conv.stride[0]
            set_conv_weight(layer.conv, path_kernels(layer.conv, frequencies, rate))
        elif kind == "EncodecResnetBlock":  # shortcut identity, block branch zero
            for sub in layer.block:
                if hasattr(sub, "conv"):
                    set_conv_weight(sub.conv, torch.zeros_like(sub.conv.weight))
            set_conv_weight(layer.shortcut.conv, identity_kernel(layer.shortcut.conv, paths))
    last = layers[-1].conv
    weight = torch.zeros_like(last.weight)
    weight[0, :paths, last.kernel_size[0] // 2] = gain
    set_conv_weight(last, weight)


@torch.no_grad()
def sticky_musicgen_lm(model: nn.Module, codebook_decay: float = 0.3, embedding_scale: float = 10.0,
                       head_gain: float = 1.0, block_scale: float = 0.1, cross_attention_scale: float = 300.0) -> None:
    """MusicGen's decoder LM made to hold a code for about a second (its output heads tied to its
    token embeddings: the previous code wins by ~8 nats), to draw the first code broadly, and to let
    the text shift that draw (cross-attention kept strong); the codebooks' embeddings (LM and EnCodec
    quantizer) shrink by ``codebook_decay`` per codebook, as a residual VQ's do, so the first codebook
    sets the timbre."""
    lm = model.decoder.model.decoder
    width = lm.embed_tokens[0].weight.shape[1]
    vocab = model.decoder.lm_heads[0].weight.shape[0]
    for k, (embedding, head) in enumerate(zip(lm.embed_tokens, model.decoder.lm_heads)):
        rows = embedding.weight
        rows.copy_(rows / rows.norm(dim=1, keepdim=True) * embedding_scale * width ** 0.5 * codebook_decay ** k)
        rows[vocab:].zero_()  # the start/pad token carries no code
        head.weight.copy_(head_gain * rows[:vocab] / (embedding_scale * width ** 0.5))
    for layer in lm.layers:
        layer.self_attn.out_proj.weight.mul_(block_scale)
        layer.fc2.weight.mul_(block_scale)
        layer.encoder_attn.out_proj.weight.mul_(cross_attention_scale)
    for k, layer in enumerate(model.audio_encoder.quantizer.layers):
        layer.codebook.embed.mul_(codebook_decay ** k)


@torch.no_grad()
def voice_oobleck_decoder(decoder: nn.Module, latent_rate: float, gain: float, smoothing: float = 3.0,
                          frequencies=OOBLECK_FREQUENCIES) -> None:
    """diffusers' ``OobleckDecoder``: latent channel ``p`` drives path ``p``, smoothed in time by the first
    convolution (7 latent frames) and by the first block's residual units (moving averages over their
    dilated 7-tap windows, added ``smoothing`` times to the signal: about a second in all), so that a
    clip's timbre follows a few latent values rather than the average of dozens; the two audio
    channels get the odd / even paths 1.2x louder."""
    paths, rate = len(frequencies), float(latent_rate)
    set_conv_weight(decoder.conv1, identity_kernel(decoder.conv1, paths, taps="mean"))
    for index, block in enumerate(decoder.block):
        rate *= block.conv_t1.stride[0]
        set_conv_weight(block.conv_t1, path_kernels(block.conv_t1, frequencies, rate))
        for unit in (block.res_unit1, block.res_unit2, block.res_unit3):
            if index == 0:
                set_conv_weight(unit.conv1, identity_kernel(unit.conv1, paths, taps="mean") / math.sqrt(
                    unit.conv1.kernel_size[0]))
                set_conv_weight(unit.conv2, identity_kernel(unit.conv2, paths) * smoothing)
            else:
                set_conv_weight(unit.conv2, torch.zeros_like(unit.conv2.weight))
    weight = torch.zeros_like(decoder.conv2.weight)
    centre = decoder.conv2.kernel_size[0] // 2
    weight[:, :paths, centre] = gain
    weight[0, 0:paths:2, centre] *= 1.2
    if weight.shape[0] > 1:
        weight[1, 1:paths:2, centre] *= 1.2
    set_conv_weight(decoder.conv2, weight)


@torch.no_grad()
def voice_hifigan(vocoder: nn.Module, frame_rate: float, gain: float, input_gain: float = 20.0,
                  frequencies=HIFIGAN_FREQUENCIES) -> None:
    """transformers' ``SpeechT5HifiGan``: the mel bins in groups (group ``p`` averaged over 7 frames)
    drive path ``p``."""
    paths, rate = len(frequencies), float(frame_rate)
    mel_bins = vocoder.conv_pre.weight.shape[1]
    per_path = mel_bins // paths
    weight = torch.zeros_like(vocoder.conv_pre.weight)
    for p in range(paths):
        weight[p, p * per_path:(p + 1) * per_path, :] = input_gain / (per_path * vocoder.conv_pre.kernel_size[0])
    set_conv_weight(vocoder.conv_pre, weight)
    for upsampler in vocoder.upsampler:
        rate *= upsampler.stride[0]
        set_conv_weight(upsampler, path_kernels(upsampler, frequencies, rate))
    for block in vocoder.resblocks:
        for conv in block.convs2:
            set_conv_weight(conv, torch.zeros_like(conv.weight))
    weight = torch.zeros_like(vocoder.conv_post.weight)
    weight[0, :paths, vocoder.conv_post.kernel_size[0] // 2] = gain
    set_conv_weight(vocoder.conv_post, weight)


def voice_stable_audio(pipe) -> None:
    """Voice a tiny ``StableAudioPipeline`` (8-channel Oobleck decoder) in place for the debug world:

    * the Oobleck decoder as 8 paths (:func:`voice_oobleck_decoder`, level about -19 dBFS);
    * the DiT's output projection x 0.3, so the sampled latents keep the initial noise's structure;
    * the scheduler's ``sigma_max`` 1, not 500: with the SDE sampler a sample keeps correlation
      ``1 / sqrt(1 + sigma_max^2)`` with its initial noise (0.002 at 500; measured: the sample did not
      move with the noise, and DITTO optimises that noise); at 1 the noise and the SDE's own draws weigh
      about the same.
    """
    from diffusers import CosineDPMSolverMultistepScheduler

    pipe.scheduler = CosineDPMSolverMultistepScheduler.from_config({**pipe.scheduler.config, "sigma_max": 1.0})
    with torch.no_grad():
        pipe.transformer.proj_out.weight.mul_(0.3)
    voice_oobleck_decoder(pipe.vae.decoder, latent_rate=pipe.vae.sampling_rate / pipe.vae.hop_length, gain=0.0018)
