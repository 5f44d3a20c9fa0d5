"""MERT-v1-330M through transformers' own ``HubertModel`` (no remote code).

MERT's hub modeling code subclasses HuBERT with the same parameter names. The config fields that
change the maths are honoured here: ``do_stable_layer_norm`` / ``feat_extract_norm`` /
``feat_proj_layer_norm`` (plain HuBERT fields), ``deepnorm`` (residuals scaled by
``(2 * num_layers) ** 0.25`` in a post-norm layer, see :class:`DeepNormEncoderLayer`),
``attention_relax`` (a per-row shift before the softmax: a no-op in exact arithmetic, ignored) and
``feature_extractor_cqt`` (a CQT branch we do not implement: refused). ``do_normalize`` from
``preprocessor_config.json`` is applied in torch so the path stays differentiable.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..hub import ModelNotFoundError, hub_file, looks_like_repo_id
from .audio import AudioError
from .head import CheckpointError

MERT_REPO = "m-a-p/MERT-v1-330M"
MERT_SAMPLE_RATE = 24_000
MERT_SEGMENT_SECONDS = 300
#: A final piece shorter than this is merged into the previous segment (the release scoring script).
MERT_MIN_TAIL_SECONDS = 1.0
#: The non-size fields of MERT-v1-330M's ``config.json`` (checked against the hub file). Every tiny or
#: full-size MERT fixture (``tiny.tiny_mert_config``, ``fullsize.mert_330m_config``, the tests') is built
#: from these and changes only widths, depths and counts, so tests run the real model's code paths
#: (GroupNorm over the first conv layer's whole output, stable layer norm, ...).
MERT_V1_FIELDS: dict = dict(
    feat_extract_norm="group", do_stable_layer_norm=True, feat_proj_layer_norm=True, conv_bias=False,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2), num_conv_pos_embedding_groups=16,
    hidden_act="gelu", feat_extract_activation="gelu", layer_norm_eps=1e-5, deepnorm=False, attention_relax=32.0,
    feature_extractor_cqt=False, sample_rate=MERT_SAMPLE_RATE,
)
#: Output frames per time chunk of the convolutional feature extractor on CPU (``MertEncoder.conv_features``).
CONV_CHUNK_FRAMES = 16


def _deepnorm_layer_class():
    from transformers.models.hubert.modeling_hubert import HubertEncoderLayer

    class DeepNormEncoderLayer(HubertEncoderLayer):
        """Post-norm HuBERT layer with DeepNorm residual scaling (MERT ``deepnorm: true``):
        ``h = LN(a*x + attn(x))``, ``out = LN(a*h + ff(h))`` with ``a = (2 N) ** 0.25``."""

        alpha: float = 1.0

        def forward(self, hidden_states, attention_mask=None, **kwargs):
            attn_residual = hidden_states
            hidden_states, _ = self.attention(hidden_states, attention_mask=attention_mask, **kwargs)
            hidden_states = self.dropout(hidden_states)
            hidden_states = self.alpha * attn_residual + hidden_states
            hidden_states = self.layer_norm(hidden_states)
            hidden_states = self.alpha * hidden_states + self.feed_forward(hidden_states)
            return self.final_layer_norm(hidden_states)

    return DeepNormEncoderLayer


def _read_json(source: str, filename: str, optional: bool) -> dict | None:
    local = Path(source).expanduser()
    if local.is_dir():
        path = local / filename
        if not path.is_file():
            if optional:
                return None
            raise ModelNotFoundError(f"MERT: folder {local} has no {filename}")
    elif looks_like_repo_id(source):
        path = hub_file(source, filename, what="MERT", optional=optional)
        if path is None:
            return None
    else:
        raise ModelNotFoundError(f"MERT: '{source}' is neither a local folder nor a hub id like '{MERT_REPO}'")
    return json.loads(Path(path).read_text())


def hubert_config_from_mert(config_dict: dict):
    """A ``HubertConfig`` from a MERT ``config.json``, refusing what HuBERT cannot express."""
    from transformers import HubertConfig

    if config_dict.get("feature_extractor_cqt", False):
        raise CheckpointError("MERT config has feature_extractor_cqt=true (a CQT input branch); "
                              "only the waveform MERT-v1 models are supported")
    if config_dict.get("deepnorm", False) and config_dict.get("do_stable_layer_norm", False):
        raise CheckpointError("MERT config sets both deepnorm and do_stable_layer_norm, which MERT itself refuses")
    fields = {k: v for k, v in config_dict.items()
              if k not in {"model_type", "architectures", "auto_map", "transformers_version"}}
    return HubertConfig.from_dict(fields)


#: Weights a MERT checkpoint may have or lack: SpecAugment's mask vector (training only, never used here).
OPTIONAL_MERT_KEYS = frozenset({"masked_spec_embed"})


def _check_loading_info(source: str, info: dict) -> None:
    """Refuse a MERT checkpoint whose weights do not match the model built from its config (transformers
    would otherwise fill missing weights with random values and only log it)."""
    problems = []
    for what, keys in (("missing", info.get("missing_keys")), ("unexpected", info.get("unexpected_keys"))):
        keys = sorted(set(keys or ()) - OPTIONAL_MERT_KEYS)
        if keys:
            shown = ", ".join(keys[:10]) + (f" (+{len(keys) - 10} more)" if len(keys) > 10 else "")
            problems.append(f"{len(keys)} {what} weight(s): {shown}")
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or ())
    if mismatched:
        problems.append(f"{len(mismatched)} weight(s) of the wrong shape: {', '.join(mismatched[:10])}")
    problems += [str(m) for m in info.get("error_msgs") or ()]
    if problems:
        raise CheckpointError(f"MERT checkpoint '{source}' does not match its config.json: " + "; ".join(problems))


class MertEncoder(nn.Module):
    """MERT features: ``(B, T)`` mono 24 kHz -> ``(B, hidden)`` last hidden state, mean over time.

    Long input is cut into consecutive ``segment_seconds`` segments (a final piece shorter than
    ``MERT_MIN_TAIL_SECONDS`` is merged into the previous segment) whose frame means are averaged weighted
    by their frame counts (the release protocol).
    """

    sample_rate = MERT_SAMPLE_RATE

    def __init__(self, model, do_normalize: bool, segment_seconds: float = MERT_SEGMENT_SECONDS,
                 micro_batch: int | None = None, conv_chunk_frames: int | None = None):
        super().__init__()
        #: clips per transformer pass; ``None``: 1 on CPU (a 2-core CPU runs MERT ~8 % faster per
        #: clip one at a time than in batches of 4: activations stay in cache), all at once elsewhere.
        self.micro_batch = micro_batch
        #: output frames per chunk of the conv feature extractor; ``None``: ``CONV_CHUNK_FRAMES`` on CPU,
        #: the whole segment in one pass elsewhere; ``0``: always the whole segment in one pass.
        self.conv_chunk_frames = conv_chunk_frames
        self.model = model
        self.do_normalize = bool(do_normalize)
        self.segment_samples = int(segment_seconds * MERT_SAMPLE_RATE)
        self.hidden_size = int(model.config.hidden_size)
        if self.segment_samples < self._receptive_field()[0]:
            raise ValueError(f"segment_seconds={segment_seconds} is shorter than one MERT frame")

    @classmethod
    def from_pretrained(cls, source: str = MERT_REPO, **model_kwargs) -> MertEncoder:
        from transformers import HubertModel

        config_dict = _read_json(source, "config.json", optional=False)
        preprocessor = _read_json(source, "preprocessor_config.json", optional=True) or {}
        config = hubert_config_from_mert(config_dict)
        model_kwargs.pop("output_loading_info", None)
        try:
            model, info = HubertModel.from_pretrained(source, config=config, output_loading_info=True, **model_kwargs)
        except OSError as err:
            raise ModelNotFoundError(
                f"MERT weights for '{source}' not found: {err}. On a machine with network run "
                f"`huggingface-cli download {source}`, or pass a local folder."
            ) from err
        _check_loading_info(source, info)
        return cls.from_model(model, do_normalize=preprocessor.get("do_normalize", False))

    @classmethod
    def from_model(cls, model, do_normalize: bool) -> MertEncoder:
        """Wrap a built ``HubertModel`` (applying ``deepnorm`` from its config)."""
        if getattr(model.config, "deepnorm", False):
            layer_class = _deepnorm_layer_class()
            alpha = (2.0 * model.config.num_hidden_layers) ** 0.25
            for layer in model.encoder.layers:
                if type(layer).__name__ != "HubertEncoderLayer":
                    raise CheckpointError("deepnorm needs the post-norm HuBERT encoder (do_stable_layer_norm=false)")
                layer.__class__ = layer_class  # our own instance: same parameters, scaled residuals
                layer.alpha = alpha
        return cls(model.eval().requires_grad_(False), do_normalize)

    def conv_features(self, wave: torch.Tensor) -> torch.Tensor:
        """HuBERT's convolutional feature extractor, run over time chunks: ``(B, T)`` -> ``(B, C, frames)``.

        Equals ``model.feature_extractor(wave)``. Output frame ``j`` depends on input samples
        ``[j * hop, j * hop + receptive)`` only, except through the ``"group"`` norm (MERT-v1's
        ``feat_extract_norm``): a GroupNorm with one group per channel over the first conv layer's output,
        whose mean and variance span the whole input. So chunks of ``conv_chunk_frames`` frames with their
        overlapping inputs give the whole-signal result (for ``"group"``, after a first chunked pass over
        the first conv layer that sums each channel's moments over the whole input), while each chunk's
        activations stay in the CPU cache instead of one pass over 48,000 x 512 activations per 10 s.
        Measured for the full-size stack on a 10 s clip, 2 CPU threads, no grad: 0.58 s vs 0.74 s and a
        peak memory growth of ~25-115 MB vs 246 MB (with gradients: same time, 0.54 vs 0.76 GB). The chunks
        are many small ops, so they suffer more than one pass when the cores are oversubscribed.
        """
        extractor = self.model.feature_extractor
        receptive, hop = self._receptive_field()
        total = (wave.shape[-1] - receptive) // hop + 1
        chunk = self.conv_chunk_frames
        if chunk is None:
            chunk = CONV_CHUNK_FRAMES if wave.device.type == "cpu" else total
        if chunk <= 0 or chunk >= total:
            return extractor(wave)
        first = extractor.conv_layers[0]
        norm = getattr(first, "layer_norm", None)
        if isinstance(norm, nn.GroupNorm):
            if norm.num_groups != norm.num_channels:
                return extractor(wave)  # not HuBERT's one-group-per-channel layout: no chunked form here
            return self._group_norm_chunks(wave, chunk, receptive, hop)
        if not isinstance(norm, nn.LayerNorm):
            return extractor(wave)
        # "layer" norm: each frame normalised on its own in every layer, so the chunks are exact as they are
        pieces = [extractor(wave[:, hop * a: hop * (min(total, a + chunk) - 1) + receptive])
                  for a in range(0, total, chunk)]
        return torch.cat(pieces, dim=-1)

    def _group_norm_chunks(self, wave: torch.Tensor, chunk: int, receptive: int, hop: int) -> torch.Tensor:
        """The ``"group"`` conv stack over chunks of ``chunk`` output frames (see :meth:`conv_features`)."""
        layers = self.model.feature_extractor.conv_layers
        first, norm = layers[0], layers[0].layer_norm
        kernel, stride = first.conv.kernel_size[0], first.conv.stride[0]
        x = wave[:, None]
        # pass 1: each channel's mean and (biased) variance of the first conv's output over the whole input,
        # from non-overlapping chunks of its output frames, accumulated in float64
        frames = (x.shape[-1] - kernel) // stride + 1
        step = chunk * (hop // stride)
        sums = squares = 0.0
        for a in range(0, frames, step):
            piece = x[..., stride * a: stride * (min(frames, a + step) - 1) + kernel]
            if torch.is_grad_enabled() and piece.requires_grad:  # keep only the input chunk for backward
                s1, s2 = checkpoint(_channel_moments, first.conv, piece, use_reentrant=False)
            else:
                s1, s2 = _channel_moments(first.conv, piece)
            sums, squares = sums + s1, squares + s2
        mean = sums / frames
        var = (squares / frames - mean * mean).clamp_min(0.0)
        dtype = torch.promote_types(wave.dtype, torch.float32)
        scale = norm.weight.double() * torch.rsqrt(var + norm.eps)  # GroupNorm: (y - mean) * rstd * w + b
        shift = (norm.bias.double() - mean * scale).to(dtype)[..., None]
        scale = scale.to(dtype)[..., None]
        # pass 2: per chunk, first conv, normalise with the whole-input statistics, activation, other layers
        total = (wave.shape[-1] - receptive) // hop + 1
        pieces = []
        for a in range(0, total, chunk):
            h = first.conv(x[..., hop * a: hop * (min(total, a + chunk) - 1) + receptive])
            h = first.activation(torch.addcmul(shift, h.to(dtype), scale).to(h.dtype))
            for layer in layers[1:]:
                h = layer(h)
            pieces.append(h)
        return torch.cat(pieces, dim=-1)

    def _receptive_field(self) -> tuple[int, int]:
        receptive, hop = 1, 1
        for kernel, stride in zip(self.model.config.conv_kernel, self.model.config.conv_stride):
            receptive += (kernel - 1) * hop
            hop *= stride
        return receptive, hop

    def hidden_states(self, wave: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> last hidden state ``(B, frames, hidden)``; equals
        ``HubertModel(wave).last_hidden_state`` in eval mode (the steps of ``HubertModel.forward``
        without masking, whose feature extractor runs chunked)."""
        features = self.conv_features(wave).transpose(1, 2)
        hidden = self.model.feature_projection(features)
        if isinstance(hidden, tuple):  # older transformers return (hidden, normed features)
            hidden = hidden[0]
        return self.model.encoder(hidden).last_hidden_state

    def _segment_features(self, segment: torch.Tensor) -> tuple[torch.Tensor, int]:
        if self.do_normalize:  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm, in torch
            mean = segment.mean(dim=-1, keepdim=True)
            var = segment.var(dim=-1, keepdim=True, unbiased=False)
            segment = (segment - mean) / torch.sqrt(var + 1e-7)
        dtype = next(self.model.parameters()).dtype
        hidden = self.hidden_states(segment.to(dtype))  # (B, frames, hidden)
        return hidden.float().mean(dim=1), hidden.shape[1]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` mono 24 kHz -> ``(B, hidden)``."""
        step = self.micro_batch or (1 if wave.device.type == "cpu" else wave.shape[0])
        if step < wave.shape[0]:
            return torch.cat([self._features(wave[i:i + step]) for i in range(0, wave.shape[0], step)])
        return self._features(wave)

    def segments(self, total: int) -> list[tuple[int, int]]:
        """``[start, end)`` sample ranges of the segments of a ``total``-sample input: consecutive
        ``segment_seconds`` pieces, a final piece shorter than ``MERT_MIN_TAIL_SECONDS`` merged into the
        previous segment (the release scoring script)."""
        bounds = list(range(0, total, self.segment_samples)) + [total]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < MERT_MIN_TAIL_SECONDS * MERT_SAMPLE_RATE:
            del bounds[-2]
        return list(zip(bounds[:-1], bounds[1:]))

    def _features(self, wave: torch.Tensor) -> torch.Tensor:
        total = wave.shape[-1]
        min_samples = self._receptive_field()[0]  # one frame (400 samples for MERT)
        if total < min_samples:
            raise AudioError(f"audio too short for MERT: {total} samples at 24 kHz, the minimum is {min_samples} samples ({min_samples / 24:.0f} ms)")
        sums, frames = None, 0
        for start, end in self.segments(total):
            mean, count = self._segment_features(wave[:, start:end])
            sums = mean * count if sums is None else sums + mean * count
            frames += count
        return sums / frames


def _channel_moments(conv: nn.Conv1d, piece: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (clip, channel): the sum and the sum of squares of ``conv(piece)`` over time, summed within the
    chunk in at least float32 and returned in float64 (the caller adds the chunks in float64)."""
    out = conv(piece)
    out = out.to(torch.promote_types(out.dtype, torch.float32))
    return out.sum(dim=-1).double(), (out * out).sum(dim=-1).double()
