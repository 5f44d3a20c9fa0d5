"""Audio checks and the differentiable preprocessing shared by the reward's encoders.

All functions take and return torch tensors and keep gradients, so that the reward is
differentiable with respect to the waveform.
"""

from __future__ import annotations

import stat
import warnings
from pathlib import Path

import numpy as np
import torch

from .resample import resample as _band_limited_resample


class AudioError(ValueError):
    """Audio that cannot be scored; the message names the problem and the fix."""


class AudioWarning(UserWarning):
    """Audio that is scored, but not as the file promised (a truncated WAV): the message says what was read."""


def check_audio(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Validate a ``(B, C, T)`` float waveform batch and return it.

    Raises :class:`AudioError` for a wrong rank, an empty signal, a non-float dtype,
    a non-positive sample rate, or NaN/Inf samples (naming the batch items).
    """
    if not isinstance(audio, torch.Tensor):
        raise AudioError(f"audio must be a torch.Tensor of shape (B, C, T), got {type(audio).__name__}")
    if audio.ndim != 3:
        hint = " (add a channel dim: audio.unsqueeze(1))" if audio.ndim == 2 else ""
        raise AudioError(f"audio must have shape (B, C, T), got {tuple(audio.shape)}{hint}")
    if not audio.is_floating_point():
        raise AudioError(f"audio must be floating point in [-1, 1], got dtype {audio.dtype}")
    batch, channels, length = audio.shape
    if batch == 0 or channels == 0 or length == 0:
        raise AudioError(f"audio is empty: shape {tuple(audio.shape)}")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    finite = torch.isfinite(audio.detach()).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise AudioError(f"audio holds NaN or Inf samples in batch item(s) {bad}; clean or drop them")
    return audio


def to_mono(audio: torch.Tensor) -> torch.Tensor:
    """``(B, C, T)`` -> ``(B, T)`` by averaging channels."""
    return audio.mean(dim=1)


def resample(wave: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """``(..., T)`` at ``orig_sr`` -> ``(..., T')`` at ``new_sr``, differentiable; ``T' = ceil(T * new_sr / orig_sr)``.

    The reference scripts' resampler: torchaudio's ``functional.resample`` with its defaults
    (Hann-windowed sinc, ``lowpass_filter_width=6``, ``rolloff=0.99``), reimplemented in
    :mod:`tunejury_align.reward.resample` (``T'`` exactly as torchaudio rounds it:
    :func:`~tunejury_align.reward.resample.resampled_length`). Equal rates return ``wave`` itself.
    """
    return _band_limited_resample(wave, orig_sr, new_sr)


def quantize_int16(wave: torch.Tensor) -> torch.Tensor:
    """Round-trip through int16 as LAION-CLAP's file path does (clip to [-1, 1], truncate).

    The forward value equals ``int16_to_float32(float32_to_int16(x))``; the gradient passes
    straight through (identity), so the release protocol stays differentiable.
    """
    quantized = torch.trunc(wave.clamp(-1.0, 1.0) * 32767.0) / 32767.0
    return wave + (quantized - wave).detach()


def centre_window(wave: torch.Tensor, length: int) -> torch.Tensor:
    """``(B, T)`` -> ``(B, length)``: the centre window if longer, LAION-CLAP's repeat-pad if shorter.

    Repeat-pad: tile the clip ``int(length / T)`` times, then zero-pad to ``length``.
    """
    total = wave.shape[-1]
    if total > length:
        start = (total - length) // 2
        return wave[..., start:start + length]
    if total < length:
        repeats = length // total
        wave = wave.repeat(1, repeats)
        return torch.nn.functional.pad(wave, (0, length - wave.shape[-1]))
    return wave


def read_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Read an audio file into ``(C, T)`` float32 and its sample rate, with clear errors.

    Only regular files are opened (a FIFO or device could block forever); an empty file is an
    :class:`AudioError`; a WAV whose header promises more than the file holds is read as far as it goes,
    with an :class:`AudioWarning` naming the seconds read.
    """
    import soundfile as sf

    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except OSError as err:
        raise AudioError(f"{path}: cannot read it ({err.strerror})") from err
    if stat.S_ISDIR(info.st_mode):
        raise AudioError(f"{path}: a folder, not an audio file")
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(
            info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "special"
        raise AudioError(f"{path}: not a regular file ({kind}); pass an audio file")
    if info.st_size == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes)")
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(f"{path}: cannot read audio ({err}); supported formats: {sorted(sf.available_formats())[:12]}...") from err
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: the file holds NaN or Inf samples")
    promised = wav_header_frames(path)
    if promised is not None and promised > data.shape[0]:
        warnings.warn(AudioWarning(
            f"{path}: truncated: its header promises {promised / sample_rate:.2f} s, the file holds "
            f"{data.shape[0] / sample_rate:.2f} s; scored the {data.shape[0] / sample_rate:.2f} s read"), stacklevel=2)
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sample_rate)


def wav_header_frames(path: Path) -> int | None:
    """Frames the ``data`` chunk of a RIFF/WAVE header declares (``None``: not a WAV, or a streamed one
    whose header leaves the length open)."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    position, block_align = 12, 0
    while position + 8 <= len(head):
        chunk, size = head[position:position + 4], int.from_bytes(head[position + 4:position + 8], "little")
        if chunk == b"fmt " and position + 22 <= len(head):
            block_align = int.from_bytes(head[position + 20:position + 22], "little")
        if chunk == b"data":
            return size // block_align if block_align and size not in (0, 0xFFFFFFFF) else None
        position += 8 + size + (size & 1)
    return None
