"""LAION-CLAP (HTSAT audio tower + RoBERTa text tower) through the laion-clap library's own classes.

The module mirrors the state-dict layout of ``laion_clap.clap_module.model.CLAP`` with a RoBERTa
text branch (``audio_branch.*``, ``text_branch.*``, ``audio_projection.*``, ...), so the released
``music_audioset_epoch_15_esc_90.14.pt`` loads with ``strict=True``. We do not go through
``laion_clap.CLAP_Module`` because (a) ``import laion_clap`` fetches three tokenizers from the hub at
import time, (b) it builds the text tower with ``RobertaModel.from_pretrained('roberta-base')`` only
to overwrite those weights, and (c) its ``load_ckpt`` unpickles arbitrary code (no ``weights_only``).
The HTSAT tower is laion-clap's ``HTSAT_Swin_Transformer``; its sizes are read from the checkpoint.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from ..hub import ModelNotFoundError, resolve_file
from .head import CheckpointError, load_state_dict_safely

CLAP_REPO = "lukewys/laion_clap"
CLAP_MUSIC_CHECKPOINT = "music_audioset_epoch_15_esc_90.14.pt"
CLAP_SAMPLE_RATE = 48_000
CLAP_WINDOW = 480_000  # 10 s at 48 kHz
CLAP_EMBED_DIM = 512
CLAP_TEXT_MAX_LENGTH = 77

# LAION-CLAP's HTSAT audio front-end (model_configs/HTSAT-base.json; identical for tiny/large).
HTSAT_AUDIO_CFG = dict(
    audio_length=1024, clip_samples=CLAP_WINDOW, mel_bins=64, sample_rate=CLAP_SAMPLE_RATE,
    window_size=1024, hop_size=480, fmin=50, fmax=14000, class_num=527, model_type="HTSAT",
    model_name="base",
)


def clap_module() -> ModuleType:
    """laion-clap's ``clap_module`` package, imported without running ``laion_clap/__init__``.

    laion-clap itself puts its folder on ``sys.path`` and imports ``clap_module`` as a top-level
    package; we register the same package under the same name, minus the hub-fetching
    ``laion_clap.training.data`` import. A later ``import laion_clap`` reuses it unchanged.
    """
    if "clap_module" in sys.modules:
        return sys.modules["clap_module"]
    spec = importlib.util.find_spec("laion_clap")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("laion-clap is not installed: pip install laion-clap")
    package_dir = Path(list(spec.submodule_search_locations)[0]) / "clap_module"
    module_spec = importlib.util.spec_from_file_location(
        "clap_module", package_dir / "__init__.py", submodule_search_locations=[str(package_dir)]
    )
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["clap_module"] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["clap_module"]
        raise
    return module


class FFTSpectrogram(nn.Module):
    """torchlibrosa's ``Spectrogram`` (HTSAT's front end) computed with an FFT (``torch.stft``) instead of its two
    ``Conv1d`` DFT products: the same power spectrogram ``(B, 1, frames, n_fft // 2 + 1)`` (the same periodic Hann
    window, centre padding and pad mode), to float32 rounding, at a fraction of the cost (the convolutions take
    ``2 (n_fft / 2 + 1) n_fft`` multiply-adds per frame: most of a tiny HTSAT's time). It keeps the original module
    as ``stft`` (so the checkpoint's ``spectrogram_extractor.stft.conv_*`` weights load into it unchanged) and uses
    the FFT only while those weights are the windowed DFT basis they are initialised to (:meth:`check_basis`, run
    after loading); otherwise it runs the original convolutions."""

    def __init__(self, spectrogram: nn.Module):
        super().__init__()
        self.stft, self.power = spectrogram.stft, float(spectrogram.power)
        self.check_basis()

    def dft_basis(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(n_fft // 2 + 1, 1, n_fft)`` real and imaginary DFT rows times the periodic Hann window, as
        torchlibrosa builds them (float64 arithmetic, float32 result)."""
        stft = self.stft
        window = torch.zeros(stft.n_fft, dtype=torch.float64)
        offset = (stft.n_fft - stft.win_length) // 2  # librosa's pad_center
        window[offset:offset + stft.win_length] = torch.hann_window(stft.win_length, periodic=True, dtype=torch.float64)
        n = torch.arange(stft.n_fft, dtype=torch.float64)
        k = torch.arange(stft.n_fft // 2 + 1, dtype=torch.float64)
        angle = -2.0 * math.pi * torch.outer(k, n) / stft.n_fft
        return ((torch.cos(angle) * window).float()[:, None, :], (torch.sin(angle) * window).float()[:, None, :])

    @torch.no_grad()
    def check_basis(self) -> bool:
        """Whether the FFT path applies (the weights are the windowed DFT basis, to 1e-6); sets ``self.exact``."""
        stft = self.stft
        real, imag = self.dft_basis()
        weights = (stft.conv_real.weight.detach().float().cpu(), stft.conv_imag.weight.detach().float().cpu())
        self.exact = (stft.window == "hann" and stft.pad_mode in ("reflect", "constant") and weights[0].shape == real.shape
                      and max(float((w - b).abs().max()) for w, b in zip(weights, (real, imag))) <= 1e-6)
        return self.exact

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(B, 1, frames, n_fft // 2 + 1)`` power (``|STFT|^power``) spectrogram."""
        stft = self.stft
        if not self.exact:
            real, imag = stft(waveform)
            power = real ** 2 + imag ** 2
        else:
            window = torch.hann_window(stft.win_length, periodic=True, dtype=torch.float32, device=waveform.device)
            spectrum = torch.stft(waveform.float(), stft.n_fft, stft.hop_length, stft.win_length, window,
                                  center=stft.center, pad_mode=stft.pad_mode, return_complex=True)
            power = (spectrum.real ** 2 + spectrum.imag ** 2).transpose(1, 2)[:, None].to(waveform.dtype)
        return power if self.power == 2.0 else power ** (self.power / 2.0)


def _projection(in_dim: int, out_dim: int = CLAP_EMBED_DIM) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))


def htsat_sizes_from_state_dict(state_dict: dict[str, torch.Tensor]) -> dict:
    """Read the HTSAT tower's sizes (embed_dim, depths, num_heads, window_size) off its weights."""
    try:
        embed_dim = int(state_dict["audio_branch.patch_embed.proj.weight"].shape[0])
        num_classes = int(state_dict["audio_branch.tscam_conv.weight"].shape[0])
    except KeyError as err:
        raise CheckpointError(f"not a LAION-CLAP HTSAT checkpoint: no {err.args[0]}") from None
    blocks: dict[int, set[int]] = {}
    for key in state_dict:
        match = re.match(r"audio_branch\.layers\.(\d+)\.blocks\.(\d+)\.", key)
        if match:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    depths = [len(blocks[i]) for i in sorted(blocks)]
    tables = [state_dict[f"audio_branch.layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in sorted(blocks)]
    num_heads = [int(t.shape[1]) for t in tables]
    window_size = int(round((math.sqrt(tables[0].shape[0]) + 1) / 2))
    return dict(embed_dim=embed_dim, depths=depths, num_heads=num_heads, window_size=window_size,
                num_classes=num_classes)


class ClapEncoder(nn.Module):
    """CLAP audio and text embeddings (512-d, L2-normalised), differentiable in the waveform.

    Audio input: ``(B, 480000)`` mono at 48 kHz (window selection happens in the reward).
    """

    sample_rate = CLAP_SAMPLE_RATE

    def __init__(self, htsat: dict, text_config, tokenizer):
        super().__init__()
        cm = clap_module()
        from clap_module.htsat import HTSAT_Swin_Transformer
        from clap_module.model import MLPLayers
        from transformers import RobertaModel

        audio_cfg = SimpleNamespace(**HTSAT_AUDIO_CFG)
        self.audio_branch = HTSAT_Swin_Transformer(
            spec_size=256, patch_size=4, patch_stride=(4, 4), num_classes=htsat["num_classes"],
            embed_dim=htsat["embed_dim"], depths=list(htsat["depths"]), num_heads=list(htsat["num_heads"]),
            window_size=htsat["window_size"], config=audio_cfg, enable_fusion=False, fusion_type="None",
        )
        self.audio_branch.spectrogram_extractor = FFTSpectrogram(self.audio_branch.spectrogram_extractor)
        audio_width = htsat["embed_dim"] * 2 ** (len(htsat["depths"]) - 1)
        self.text_branch = RobertaModel(text_config, add_pooling_layer=True)
        self.text_transform = MLPLayers(units=[CLAP_EMBED_DIM] * 3, dropout=0.1)
        self.text_projection = _projection(text_config.hidden_size)
        self.audio_transform = MLPLayers(units=[CLAP_EMBED_DIM] * 3, dropout=0.1)
        self.audio_projection = _projection(audio_width)
        self.logit_scale_a = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        self.logit_scale_t = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        self.tokenizer = tokenizer
        self.htsat_sizes = dict(htsat)
        del cm

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, checkpoint: str = CLAP_REPO, text_model: str = "roberta-base") -> ClapEncoder:
        """Load the CLAP music checkpoint from a hub id (``lukewys/laion_clap`` ->
        ``music_audioset_epoch_15_esc_90.14.pt``), ``owner/repo/file.pt`` or a local file/folder.

        ``text_model`` (hub id or local folder) supplies the RoBERTa config and tokenizer; its
        weights are not downloaded (the CLAP checkpoint holds the text tower's weights).
        """
        path = resolve_file(checkpoint, CLAP_MUSIC_CHECKPOINT, what="CLAP checkpoint")
        text_config, tokenizer = load_text_side(text_model)
        return cls.from_file(path, text_config, tokenizer)

    @classmethod
    def from_file(cls, path: str | Path, text_config, tokenizer) -> ClapEncoder:
        """Load a LAION-CLAP checkpoint file (a training checkpoint or a plain state dict)."""
        # The released file is a training checkpoint (model + Adam state, numpy float64 learning
        # rates): allow those scalars for this load only, and map the file so that the optimizer
        # state (2/3 of its 2.35 GB) is never read. Heads are plain state dicts and get neither.
        state_dict = load_state_dict_safely(Path(path), numpy_scalars=True, mmap=True)
        # The tensors were just loaded for this encoder alone: adopt them rather than copy them (peak
        # memory one model, not two; the mapping is copy-on-write, so the file is never written).
        return cls.from_state_dict(state_dict, text_config, tokenizer, where=str(path), assign=True)

    @classmethod
    def from_state_dict(cls, state_dict, text_config, tokenizer, where: str = "CLAP state_dict",
                        assign: bool = False) -> ClapEncoder:
        """Build the encoder for ``state_dict`` (sizes read off its weights) and load it strictly.

        ``assign=True`` makes the encoder's tensors *be* those of ``state_dict`` (converted only where
        the dtype differs) instead of copies; pass it only for tensors nobody else holds.
        """
        state_dict = {k: v for k, v in state_dict.items() if k != "text_branch.embeddings.position_ids"}
        encoder = cls(htsat_sizes_from_state_dict(state_dict), text_config, tokenizer)
        own = encoder.state_dict()
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        if missing or unexpected:
            raise CheckpointError(
                f"{where}: does not match LAION-CLAP HTSAT + RoBERTa (enable_fusion=False); missing "
                f"{missing[:5]}, unexpected {unexpected[:5]}. Use the non-fusion music checkpoint "
                f"'{CLAP_MUSIC_CHECKPOINT}' and a text model matching its RoBERTa branch."
            )
        wrong = [k for k in own if own[k].shape != state_dict[k].shape]
        if wrong:
            raise CheckpointError(f"{where}: shape mismatch for {wrong[:5]} (text model config vs checkpoint?)")
        if assign:
            state_dict = {k: v.to(own[k].dtype) for k, v in state_dict.items()}
        del own
        encoder.load_state_dict(state_dict, strict=True, assign=assign)
        encoder.audio_branch.spectrogram_extractor.check_basis()  # the checkpoint's DFT weights: FFT or not
        return encoder.eval().requires_grad_(False)

    # -- embeddings ------------------------------------------------------------------------
    def embed_audio(self, window: torch.Tensor) -> torch.Tensor:
        """``(B, 480000)`` mono 48 kHz -> ``(B, 512)`` normalised audio embeddings."""
        params = next(self.audio_branch.parameters())
        inputs = {
            "waveform": window.to(params.dtype),
            "longer": torch.zeros(window.shape[0], dtype=torch.bool, device=window.device),
        }
        embedding = self.audio_branch(inputs, mixup_lambda=None, device=window.device)["embedding"]
        return F.normalize(self.audio_projection(embedding), dim=-1)

    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        """``prompts`` (N strings) -> ``(N, 512)`` normalised text embeddings."""
        device = next(self.text_branch.parameters()).device
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True,
                                max_length=CLAP_TEXT_MAX_LENGTH, return_tensors="pt")
        pooled = self.text_branch(input_ids=tokens["input_ids"].to(device),
                                  attention_mask=tokens["attention_mask"].to(device))["pooler_output"]
        return F.normalize(self.text_projection(pooled), dim=-1)


def laion_training_checkpoint(model: nn.Module, *, epoch: int = 15, epochs: int = 45, steps_per_epoch: int = 1000,
                              base_lr: float = 1e-4, warmup: int = 3200, seed: int = 0) -> dict:
    """A checkpoint in the layout LAION-CLAP's training writes (``training/main.py``), for tests and
    benchmarks that stand in for ``music_audioset_epoch_15_esc_90.14.pt``.

    ``{"epoch": int, "name": str, "state_dict": {"module.*": tensor}, "optimizer": Adam state_dict}``:
    the model was wrapped in DistributedDataParallel (``module.`` keys); Adam over laion's two groups
    (gains/biases/logit scales without weight decay, the rest), one step taken with seeded random
    gradients so every trained parameter has ``step``/``exp_avg``/``exp_avg_sq``; then each group's
    ``lr`` set by laion's ``cosine_lr`` past warm-up, which yields a numpy float64 (``np.cos``), as in
    the real file. fp32 training (its training script: ``--precision fp32``) writes no ``scaler``.
    Trained parameters: all but HTSAT's STFT/mel front-end (frozen in laion-clap). ``model`` is left
    untouched.
    """
    import numpy as np

    frozen = ("audio_branch.spectrogram_extractor.", "audio_branch.logmel_extractor.")  # torchlibrosa, frozen
    named = [(n, p) for n, p in model.named_parameters() if not n.startswith(frozen)]
    gen = torch.Generator().manual_seed(seed)

    def no_decay(name: str, p: torch.Tensor) -> bool:  # laion's ``exclude``
        return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    clones = {n: p.detach().clone().requires_grad_(True) for n, p in named}
    optimizer = torch.optim.Adam(
        [{"params": [clones[n] for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
         {"params": [clones[n] for n, p in named if not no_decay(n, p)], "weight_decay": 0.0}],
        lr=base_lr, betas=(0.9, 0.999), eps=1e-8)
    for clone in clones.values():
        clone.grad = torch.randn(clone.shape, generator=gen) * 1e-3
    optimizer.step()
    step, total = epoch * steps_per_epoch - 1, epochs * steps_per_epoch  # defaults: laion's example script
    lr = 0.5 * (1 + np.cos(np.pi * (step - warmup) / (total - warmup))) * base_lr  # laion's cosine_lr
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer_state = optimizer.state_dict()
    del optimizer, clones
    state = model.state_dict()
    text = getattr(model, "text_branch", None)
    if text is not None and "text_branch.embeddings.position_ids" not in state:  # transformers < 4.31 saved it
        state["text_branch.embeddings.position_ids"] = torch.arange(text.config.max_position_embeddings)[None]
    return {
        "epoch": epoch,
        "name": f"2023_01_01-00_00_00-model_HTSAT-base-lr_{base_lr}-b_96-j_6-p_fp32",
        "state_dict": {f"module.{k}": v for k, v in state.items()},
        "optimizer": optimizer_state,
    }


def load_text_side(text_model: str):
    """RoBERTa config + tokenizer for CLAP's text tower, checked against each other."""
    from transformers import RobertaConfig, RobertaTokenizer

    try:
        config = RobertaConfig.from_pretrained(text_model)
        tokenizer = RobertaTokenizer.from_pretrained(text_model)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(
            f"CLAP text model '{text_model}' (RoBERTa config + tokenizer) not found: {err}. "
            f"On a machine with network run `huggingface-cli download {text_model} config.json vocab.json "
            "merges.txt`, or pass a local folder holding them."
        ) from err
    check_tokenizer(tokenizer, config.vocab_size, text_model)
    return config, tokenizer


def check_tokenizer(tokenizer, vocab_size: int, name: str) -> None:
    """Refuse the near-empty tokenizer that transformers returns offline without a cache."""
    if len(tokenizer) != vocab_size:
        raise ModelNotFoundError(
            f"the tokenizer of '{name}' has {len(tokenizer)} tokens but its model expects {vocab_size}: "
            "its vocabulary files are missing or do not belong to it (offline without a cached "
            "vocab.json/merges.txt, transformers silently returns a tokenizer with only special tokens)."
        )
