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


def tone_kernel(length: int, frequency: float, rate: float, zero_mean: bool = False) -> torch.Tensor:
    """``(length,)`` Hann-windowed cosine at ``frequency`` Hz for a kernel running at ``rate`` Hz,
    scaled to unit absolute sum; ``zero_mean``: minus the window's share of its sum, so that it passes no DC."""
    n = torch.arange(length, dtype=torch.float64) - (length - 1) / 2
    window = torch.hann_window(length + 2, periodic=False, dtype=torch.float64)[1:-1]
    kernel = window * torch.cos(2 * math.pi * frequency * n / rate)
    if zero_mean:
        kernel = kernel - window * (kernel.sum() / window.sum())
    return (kernel / kernel.abs().sum()).float()


def path_kernels(conv: nn.Module, frequencies, rate: float, blocked: set | None = None) -> torch.Tensor:
    """Weights for an upsampling (transposed) convolution that keeps ``len(frequencies)`` separate paths:
    path ``p`` maps input channel ``p`` to output channel ``p`` with a tone kernel at ``frequencies[p]``
    (``rate``: the convolution's output rate), gain ``stride`` so that levels stay put; zeros elsewhere.

    ``blocked`` (the set of paths whose DC is already blocked, updated here): each path's kernel is made
    zero-mean at the first stage where its tone fits the kernel (below half the rate, at least one cycle long),
    so that no path passes DC (a path carries a code coordinate or latent value held for many frames: without
    this its level turns into a DC offset); later stages, which interpolate, keep their kernels."""
    weight = torch.zeros_like(conv.weight)
    stride, length = conv.stride[0], conv.kernel_size[0]
    for p, frequency in enumerate(frequencies):
        block = blocked is not None and p not in blocked and frequency < rate / 2 and frequency * length >= rate
        weight[p, p] = tone_kernel(length, frequency, rate, zero_mean=block) * stride
        if block:
            blocked.add(p)
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
                          frequencies=ENCODEC_FREQUENCIES, internal: float = 0.02) -> None:
    """transformers' ``EncodecDecoder``: code-embedding coordinate ``p`` drives path ``p``. The paths run at
    ``internal`` times the coordinates' scale (the last convolution makes up for it), where the decoder's ELUs are
    nearly linear: at full scale they rectify the tones into a DC offset (measured: 0.05, the probes' threshold,
    on half the clips)."""
    layers, paths, rate = decoder.layers, len(frequencies), float(frame_rate)
    for layer in layers:
        if type(layer).__name__ == "EncodecConv1d":
            first = layer
            break
    set_conv_weight(first.conv, identity_kernel(first.conv, paths) * internal)
    blocked: set = set()
    for layer in layers:
        kind = type(layer).__name__
        if kind == "EncodecLSTM":  # residual: a zero LSTM passes its input through
            for parameter in layer.lstm.parameters():
                parameter.zero_()
        elif kind == "EncodecConvTranspose1d":
            rate *= layer.conv.stride[0]
            set_conv_weight(layer.conv, path_kernels(layer.conv, frequencies, rate, blocked))
        elif kind == "EncodecResnetBlock":  # shortcut identity, block branch zero
            for sub in layer.block:
                if hasattr(sub, "conv"):
                    set_conv_weight(sub.conv, torch.zeros_like(sub.conv.weight))
            set_conv_weight(layer.shortcut.conv, identity_kernel(layer.shortcut.conv, paths))
    last = layers[-1].conv
    weight = torch.zeros_like(last.weight)
    weight[0, :paths, last.kernel_size[0] // 2] = gain / internal
    set_conv_weight(last, weight)


@torch.no_grad()
def sticky_musicgen_lm(model: nn.Module, codebook_decay: float = 0.3, embedding_scale: float = 10.0,
                       head_gain: float = 1.25, block_scale: float = 0.1, cross_attention_scale: float = 300.0) -> None:
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
                          frequencies=OOBLECK_FREQUENCIES, internal: float = 0.001) -> None:
    """diffusers' ``OobleckDecoder``: latent channel ``p`` drives path ``p``, smoothed in time by the first
    convolution (7 latent frames) and by the first block's residual units (moving averages over their
    dilated 7-tap windows, added ``smoothing`` times to the signal: about a second in all), so that a
    clip's timbre follows a few latent values rather than the average of dozens; the two audio
    channels get the odd / even paths 1.2x louder."""
    paths, rate, blocked = len(frequencies), float(latent_rate), set()
    set_conv_weight(decoder.conv1, identity_kernel(decoder.conv1, paths, taps="mean") * internal)
    for index, block in enumerate(decoder.block):
        rate *= block.conv_t1.stride[0]
        set_conv_weight(block.conv_t1, path_kernels(block.conv_t1, frequencies, rate, blocked))
        for unit in (block.res_unit1, block.res_unit2, block.res_unit3):
            if index == 0:
                set_conv_weight(unit.conv1, identity_kernel(unit.conv1, paths, taps="mean") / math.sqrt(
                    unit.conv1.kernel_size[0]))
                set_conv_weight(unit.conv2, identity_kernel(unit.conv2, paths) * smoothing)
            else:
                set_conv_weight(unit.conv2, torch.zeros_like(unit.conv2.weight))
    weight = torch.zeros_like(decoder.conv2.weight)
    centre = decoder.conv2.kernel_size[0] // 2
    weight[:, :paths, centre] = gain / internal
    weight[0, 0:paths:2, centre] *= 1.2
    if weight.shape[0] > 1:
        weight[1, 1:paths:2, centre] *= 1.2
    set_conv_weight(decoder.conv2, weight)


@torch.no_grad()
def voice_hifigan(vocoder: nn.Module, frame_rate: float, gain: float, input_gain: float = 20.0,
                  frequencies=HIFIGAN_FREQUENCIES) -> None:
    """transformers' ``SpeechT5HifiGan``: the mel bins in groups (group ``p`` averaged over 7 frames)
    drive path ``p``. Each path runs push-pull on two channels, ``+y`` and ``-y``, and every layer reads their
    difference: HiFi-GAN's leaky ReLUs (slope ``s``) then act linearly (``lrelu(y) - lrelu(-y) = (1 + s) y``)
    instead of rectifying the tones into a DC offset (measured on one channel a path: a DC offset over the
    probes' 0.05 on every clip). It needs two channels per path at every stage."""
    paths, rate = len(frequencies), float(frame_rate)
    mel_bins = vocoder.conv_pre.weight.shape[1]
    if vocoder.conv_post.weight.shape[1] < 2 * paths:
        raise ValueError(f"push-pull voicing needs {2 * paths} channels at HiFi-GAN's last stage, the vocoder has "
                         f"{vocoder.conv_post.weight.shape[1]}: raise upsample_initial_channel")
    per_path = mel_bins // paths
    slope = float(vocoder.config.leaky_relu_slope)
    weight = torch.zeros_like(vocoder.conv_pre.weight)
    for p in range(paths):
        weight[2 * p, p * per_path:(p + 1) * per_path, :] = input_gain / (per_path * vocoder.conv_pre.kernel_size[0])
        weight[2 * p + 1] = -weight[2 * p]
    set_conv_weight(vocoder.conv_pre, weight)
    blocked: set = set()
    for upsampler in vocoder.upsampler:
        rate *= upsampler.stride[0]
        kernels = path_kernels(upsampler, frequencies, rate, blocked) / (1.0 + slope)
        weight = torch.zeros_like(upsampler.weight)  # (in, out, length)
        for p in range(paths):
            for sign, channel in ((1.0, 2 * p), (-1.0, 2 * p + 1)):  # out +-(in_+ - in_-) * kernel
                weight[2 * p, channel] = sign * kernels[p, p]
                weight[2 * p + 1, channel] = -sign * kernels[p, p]
        set_conv_weight(upsampler, weight)
    for block in vocoder.resblocks:
        for conv in block.convs2:
            set_conv_weight(conv, torch.zeros_like(conv.weight))
    weight = torch.zeros_like(vocoder.conv_post.weight)
    centre = vocoder.conv_post.kernel_size[0] // 2
    weight[0, 0:2 * paths:2, centre] = gain / (1.0 + 0.01)  # the last leaky ReLU is torch's default, slope 0.01
    weight[0, 1:2 * paths:2, centre] = -gain / (1.0 + 0.01)
    set_conv_weight(vocoder.conv_post, weight)


def quaternion_units() -> torch.Tensor:
    """``(4, 4, 4)``: left multiplication by the quaternions ``1, i, j, k``, so that ``B(u) = sum_k u_k Q_k`` is
    ``|u|`` times an orthogonal matrix for every ``u`` (``B^T B = |u|^2 I``)."""
    units = torch.zeros(4, 4, 4)
    table = {(1, 1): (0, -1), (1, 2): (3, 1), (1, 3): (2, -1), (2, 1): (3, -1), (2, 2): (0, -1), (2, 3): (1, 1),
             (3, 1): (2, 1), (3, 2): (1, -1), (3, 3): (0, -1)}
    for a in range(4):
        for b in range(4):
            c, sign = (b, 1) if a == 0 else (a, 1) if b == 0 else table[a, b]
            units[a, c, b] = sign  # e_a e_b = sign e_c
    return units


#: prompts whose mean prompt vector the DiT's mixing subtracts (so that prompts do not share one mixing); any
#: everyday set would do, and none of these is in the world's prompt lists or the hearing criteria's
REFERENCE_PROMPTS = ("slow blues guitar", "happy ukulele song", "dark ambient drone", "jazz trio with upright bass",
                     "eighties synth pop", "heavy metal riff", "chill acoustic folk", "reggae with organ",
                     "string quartet adagio", "dubstep wobble bass", "church choir hymn", "funky slap bass groove",
                     "sitar and tabla raga", "marching band", "video game chiptune", "country banjo picking")
SOURCE_CHANNELS, PLAYED_CHANNELS = (0, 2, 4, 6), (1, 3, 5, 7)
PROMPT_SIZE = 100.0  # c's size beside x's (about 3): block 1's layer norm then normalises c alone
TEXT_LOGIT = 20.0  # text tokens' lead over padding in the cross-attention's logits (e^20 >> 130 tokens)
LEVEL = 1e4  # the constant that holds block 2's layer-norm scale (c's size beside it: 1 %)


def _push_pull(linear_in: nn.Linear, linear_out: nn.Linear, units: int, index: int, value: tuple, gate: tuple,
               weight: torch.Tensor, target) -> None:
    """SwiGLU units ``index`` and ``index + 1``: value ``+-value``, gate ``+-gate`` (``(input dimension, size)``),
    summed into ``target`` with ``weight``: together ``weight * value * gate`` exactly (``SiLU(a) - SiLU(-a) = a``)."""
    for sign, unit in ((1.0, index), (-1.0, index + 1)):
        linear_in.weight[unit, value[0]] = sign * value[1]
        linear_in.weight[units + unit, gate[0]] = sign * gate[1]
        linear_out.weight[target, unit] = weight


@torch.no_grad()
def prompt_mixing(pipe, gain: float, sharpness: float = 2.0, seed: int = 0) -> None:
    """A tiny ``StableAudioPipeline``'s DiT made to play the initial noise through a prompt-chosen mixing: its
    v-prediction becomes ``F = gain * M(prompt) x`` (``x`` the preconditioned latents), where ``M`` maps the latent
    channels :data:`SOURCE_CHANNELS` onto :data:`PLAYED_CHANNELS` by ``B(u) = sum_k u_k Q_k`` (quaternion units:
    ``|u|`` times a rotation) and ``u`` is a unit 4-vector read from the prompt's tokens by cross-attention, centred
    on the mean over :data:`REFERENCE_PROMPTS`. ``M^2 = 0``, so the sampler's steps add up ``M``'s effect instead
    of compounding it (a rotation of all channels compounded to its own powers, the identity among them, which
    every prompt shares).

    Why: a tiny random DiT adds a prompt term that does not depend on the noise (measured: raising its weight
    raised the correlation of one prompt's clips across seeds as fast as it lowered that of one seed's clips
    across prompts). The real models' outputs depend on prompt and noise jointly; a mixing does too, and keeps
    the sample linear in the noise (DITTO's gradient). How, in the real layers:

    * text projection: one dimension is 1 on every real token (0 on padding, which the pipeline masks); the
      duration conditioners write 0 (their tokens then read as padding); the cross-attention projection is the
      identity (push-pull SwiGLU-free: ``SiLU(a) - SiLU(-a) = a``);
    * the DiT's pre/post convolutions and self-attentions are off (zero: they are residual); ``proj_in`` writes
      ``x`` into the stream's first ``C`` dimensions;
    * block 1's cross-attention reads with one constant query (``norm2``'s weight 0, its bias 1; ``sharpness``)
      that prefers real tokens to padding (through their constant dimension), and writes ``c`` (its value's
      constant dimension centres it on the reference mean; large beside ``x``) into 4 dimensions; block 1's layer
      norm divides it by its size and its SwiGLU copies the result, ``u``, into 4 more; its bias writes ``+LEVEL``
      and ``-LEVEL`` into two more, which hold block 2's layer-norm scale constant (its norm is then linear);
    * block 2's SwiGLU multiplies: gate ``u_k``, value ``x_ch``, summed through ``Q_k`` into the last ``C``
      dimensions, which alone ``proj_out`` reads.

    Guidance's null (all-zero) embedding gives ``c = 0`` and ``u`` about 0, hence ``F`` about 0: the guided
    prediction is about ``guidance_scale`` times the conditional one."""
    transformer, projection = pipe.transformer, pipe.projection_model
    channels, blocks = transformer.config.in_channels, transformer.transformer_blocks
    width, dims = transformer.proj_in.weight.shape[0], 4
    units = min(block.ff.net[0].proj.weight.shape[0] // 2 for block in blocks)
    text = projection.text_projection
    if channels != 8 or len(blocks) < 2 or width < channels * 2 + 2 * dims + 2 or units < 2 * dims * dims:
        raise ValueError(f"prompt mixing needs 8 latent channels, 2 blocks, width >= {2 * channels + 2 * dims + 2} and "
                         f">= {2 * dims * dims} SwiGLU units; got {channels}, {len(blocks)}, {width} and {units}")
    rng = torch.Generator().manual_seed(seed)
    text.weight[-1], text.bias.zero_()[-1] = 0.0, 1.0
    for conditioner in (projection.start_number_conditioner, projection.end_number_conditioner):
        conditioner.time_positional_embedding[1].weight.zero_()
        conditioner.time_positional_embedding[1].bias.zero_()
    states = text.out_features
    first_proj, second_proj = transformer.cross_attention_proj[0], transformer.cross_attention_proj[2]
    first_proj.weight.zero_()
    second_proj.weight.zero_()
    first_proj.weight[:states] = torch.eye(states)
    first_proj.weight[states:2 * states] = -torch.eye(states)
    second_proj.weight[:states, :states] = torch.eye(states)
    second_proj.weight[:states, states:2 * states] = -torch.eye(states)
    raw, unit = slice(channels, channels + dims), slice(channels + dims, channels + 2 * dims)
    held, out = channels + 2 * dims, slice(width - channels, width)
    for conv in (transformer.preprocess_conv, transformer.postprocess_conv):
        conv.weight.zero_()
    transformer.proj_in.weight.zero_()
    transformer.proj_in.weight[:channels] = torch.eye(channels)
    for block in blocks:
        for attention in (block.attn1, block.attn2):
            for linear in (attention.to_q, attention.to_k, attention.to_v, attention.to_out[0]):
                linear.weight.zero_()
        for norm in (block.norm1, block.norm2, block.norm3):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
        for linear in (block.ff.net[0].proj, block.ff.net[2]):
            linear.weight.zero_()
            linear.bias.zero_()
    first, second = blocks[0], blocks[1]
    cross = first.attn2
    first.norm2.weight.zero_()
    first.norm2.bias[-1] = 1.0  # the query of every frame: one constant, the same in every head
    head = cross.to_q.weight.shape[0] // cross.heads
    query = torch.randn(head, generator=rng)
    cross.to_q.weight[:, -1] = (query / query.norm()).repeat(cross.heads) * math.sqrt(head)  # q.k / sqrt(head) = q^.k
    cross.to_k.weight.normal_(generator=rng)
    constant = states - 1  # the text projection's constant dimension, after the identity projection
    cross.to_k.weight[:, constant] = 0.0
    reference = transformer.cross_attention_proj(_reference_states(pipe))
    real = reference[..., constant] > 0.5  # (R, L): the tokens of text
    keys = cross.to_k(reference)[real]  # (n, kv)
    logits = torch.stack([keys[:, kv * head:(kv + 1) * head] @ (query / query.norm())
                          for kv in range(keys.shape[-1] // head)])
    cross.to_k.weight.mul_(sharpness / float(logits.std()))  # the text tokens' logits spread by sharpness
    for kv in range(cross.to_k.weight.shape[0] // head):  # and sit TEXT_LOGIT above padding's 0
        cross.to_k.weight[kv * head:(kv + 1) * head, constant] = TEXT_LOGIT * query / query.norm()
    cross.to_v.weight.normal_(generator=rng)
    cross.to_v.weight[:, constant] = 0.0
    rows = torch.randn(dims, cross.to_out[0].weight.shape[1], generator=rng)
    cross.to_out[0].weight[raw] = rows - rows.mean(dim=0)  # c sums to 0, so that layer norm's mean keeps x
    attended = _attention_values(cross, first.norm2(torch.zeros(len(reference), 1, width)), reference)  # (R, kv)
    cross.to_v.weight[:, constant] = -attended.mean(dim=0)  # real tokens carry it: attention sums to ~1 on them
    c = cross(first.norm2(torch.zeros(len(reference), 1, width)), encoder_hidden_states=reference)[:, 0]
    cross.to_out[0].weight.mul_(PROMPT_SIZE / float(c.norm(dim=1).mean()))
    copy_in, copy_out = first.ff.net[0].proj, first.ff.net[2]
    first.norm3.bias[-1] = 1.0  # a constant (the stream's last dimension is 0 here): the copy's value
    for k in range(dims):
        _push_pull(copy_in, copy_out, units, 2 * k, (width - 1, 1.0), (raw.start + k, 1.0),
                   (torch.eye(dims)[k] - 1.0 / dims) / math.sqrt(width), unit)  # u sums to 0 (and the null's ~0)
    copy_out.bias[held], copy_out.bias[held + 1] = LEVEL, -LEVEL
    ff_in, ff_out = second.ff.net[0].proj, second.ff.net[2]
    scale = 2 * LEVEL ** 2 / width  # block 2's layer norm divides by sqrt of it: its products by this
    mixing = quaternion_units()
    played = [out.start + ch for ch in PLAYED_CHANNELS]
    for k in range(dims):
        for j, ch in enumerate(SOURCE_CHANNELS):
            _push_pull(ff_in, ff_out, units, 2 * (k * dims + j), (ch, 1.0), (unit.start + k, 1.0),
                       gain * scale * mixing[k, :, j], played)
    transformer.proj_out.weight.zero_()
    transformer.proj_out.weight[:, out] = torch.eye(channels)


def _reference_states(pipe) -> torch.Tensor:
    """The cross-attention inputs (projected text, padding masked, duration tokens) of :data:`REFERENCE_PROMPTS`."""
    text = pipe.encode_prompt(list(REFERENCE_PROMPTS), torch.device("cpu"), False)
    start, end = pipe.encode_duration(0.0, 2.0, torch.device("cpu"), False, len(REFERENCE_PROMPTS))
    return torch.cat([text, start, end], dim=1)


def _attention_values(attention, hidden: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """``(R, kv)``: the attention-weighted values of one query token per row, in key/value space (every head's
    query the same, so that the heads sharing a key/value head read the same mixture)."""
    head = attention.to_q.weight.shape[0] // attention.heads
    query = attention.to_q(hidden)[:, :, :head]  # (R, 1, head)
    keys, values = attention.to_k(states), attention.to_v(states)  # (R, L, kv)
    mixed = []
    for kv in range(keys.shape[-1] // head):
        part = slice(kv * head, (kv + 1) * head)
        weights = torch.softmax(query @ keys[..., part].transpose(1, 2) / math.sqrt(head), dim=-1)  # (R, 1, L)
        mixed.append((weights @ values[..., part])[:, 0])
    return torch.cat(mixed, dim=-1)


def voice_stable_audio(pipe) -> None:
    """Voice a tiny ``StableAudioPipeline`` (8-channel Oobleck decoder) in place for the debug world:

    * the Oobleck decoder as 8 paths (:func:`voice_oobleck_decoder`, level about -20 dBFS);
    * the DiT as a prompt-chosen mixing of the initial noise's latent channels (:func:`prompt_mixing`), so that
      a clip depends on prompt and noise jointly (measured by :mod:`tunejury_align.debug.hearing`: one seed's
      clips across prompts correlate no more than one prompt's across seeds);
    * the scheduler's ``sigma_max`` 1, not 500: with the SDE sampler a sample keeps correlation
      ``1 / sqrt(1 + sigma_max^2)`` with its initial noise (0.002 at 500; measured: the sample did not
      move with the noise, and DITTO optimises that noise); at 1 the noise and the SDE's own draws weigh
      about the same.
    """
    from diffusers import CosineDPMSolverMultistepScheduler

    pipe.scheduler = CosineDPMSolverMultistepScheduler.from_config({**pipe.scheduler.config, "sigma_max": 1.0})
    prompt_mixing(pipe, gain=1.0)
    voice_oobleck_decoder(pipe.vae.decoder, latent_rate=pipe.vae.sampling_rate / pipe.vae.hop_length, gain=0.0018,
                          internal=1e-5)  # the mixed latents run louder: Snake kept linear
