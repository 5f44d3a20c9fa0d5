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

from ..hub import ModelNotFoundError, hub_file, looks_like_repo_id
from .audio import AudioError
from .head import CheckpointError

MERT_REPO = "m-a-p/MERT-v1-330M"
MERT_SAMPLE_RATE = 24_000
MERT_SEGMENT_SECONDS = 300
#: Frames per time chunk of the convolutional feature extractor (see ``MertEncoder.conv_features``).
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


class MertEncoder(nn.Module):
    """MERT features: ``(B, T)`` mono 24 kHz -> ``(B, hidden)`` last hidden state, mean over time.

    Long input is cut into consecutive ``segment_seconds`` segments whose frame means are averaged
    weighted by their frame counts (the release protocol).
    """

    sample_rate = MERT_SAMPLE_RATE

    def __init__(self, model, do_normalize: bool, segment_seconds: float = MERT_SEGMENT_SECONDS,
                 micro_batch: int | None = None):
        super().__init__()
        #: clips per transformer pass; ``None``: 1 on CPU (a 2-core CPU runs MERT ~8 % faster per
        #: clip one at a time than in batches of 4: activations stay in cache), all at once elsewhere.
        self.micro_batch = micro_batch
        self.model = model
        self.do_normalize = bool(do_normalize)
        self.segment_samples = int(segment_seconds * MERT_SAMPLE_RATE)
        self.hidden_size = int(model.config.hidden_size)

    @classmethod
    def from_pretrained(cls, source: str = MERT_REPO, **model_kwargs) -> MertEncoder:
        from transformers import HubertModel

        config_dict = _read_json(source, "config.json", optional=False)
        preprocessor = _read_json(source, "preprocessor_config.json", optional=True) or {}
        config = hubert_config_from_mert(config_dict)
        try:
            model = HubertModel.from_pretrained(source, config=config, **model_kwargs)
        except OSError as err:
            raise ModelNotFoundError(
                f"MERT weights for '{source}' not found: {err}. On a machine with network run "
                f"`huggingface-cli download {source}`, or pass a local folder."
            ) from err
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

        Output frame ``j`` depends on input samples ``[j * hop, j * hop + receptive)`` only, so chunks of
        ``CONV_CHUNK_FRAMES`` frames with their overlapping inputs give exactly the whole-signal result,
        while each chunk's activations stay in the CPU cache (2x faster on 2 cores than one pass over
        48,000 x 512 activations; measured by benchmarks/score_throughput.py).
        """
        receptive, hop = self._receptive_field()
        total = (wave.shape[-1] - receptive) // hop + 1
        chunk = CONV_CHUNK_FRAMES if wave.device.type == "cpu" else total
        extractor = self.model.feature_extractor
        pieces = [extractor(wave[:, hop * a: hop * (min(total, a + chunk) - 1) + receptive])
                  for a in range(0, total, chunk)]
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

    def _features(self, wave: torch.Tensor) -> torch.Tensor:
        total = wave.shape[-1]
        min_samples = self._receptive_field()[0]  # one frame (400 samples for MERT)
        if total < min_samples:
            raise AudioError(f"audio too short for MERT: {total} samples at 24 kHz, the minimum is {min_samples} samples ({min_samples / 24:.0f} ms)")
        sums, frames = None, 0
        for start in range(0, total, self.segment_samples):
            segment = wave[:, start:start + self.segment_samples]
            if segment.shape[-1] < min_samples:  # a tail shorter than one frame adds nothing
                continue
            mean, count = self._segment_features(segment)
            sums = mean * count if sums is None else sums + mean * count
            frames += count
        return sums / frames
