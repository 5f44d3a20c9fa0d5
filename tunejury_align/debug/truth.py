"""The debug world's truth: a hidden, deterministic stand-in for human preference.

``truth(audio, sample_rate, prompts) -> (B,)`` scores what a listener could hear, in four parts:

1. **Spectral balance for the prompt** (the main part). The clip (mono mix, resampled to 16 kHz with
   the reward's torchaudio-equivalent resampler) is cut into 8 log-spaced bands from 62.5 Hz to 8 kHz
   (edges ``geomspace(62.5, 8000, 9)``, just under an octave each); each band's level is its mean
   power over a Hann STFT (1024 / 256) in dB, and the *profile* is those levels minus their mean (the
   spectral shape, independent of loudness). The prompt asks for a target profile: a gently darkening
   tilt (+6 dB in the lowest band down to -6 dB in the highest) plus, for each word of the prompt
   (lower-case letters and digits), a fixed 8-band shape drawn from ``N(0, 4 dB)`` with the word's
   SHA-256 as seed, summed over the words and divided by the square root of their number. The part is
   ``-rms(profile - target) / 6 dB``: 0 for a perfect match, -1 for a 6 dB RMS mismatch.
2. **Level**: no penalty within 8 dB of -20 dBFS (mean power of the 16 kHz mono mix), then -0.1 per dB.
3. **Clipping**: -10 x the fraction of samples (any channel) with ``|x| >= 0.99``.
4. **Silence**: -2 x the fraction of 50 ms frames quieter than -50 dBFS.

Prompts that share words share part of their target, so a model of the truth can generalise to new
prompts made of known words, and the prompt-independent parts (tilt, level, clipping, silence) to any
prompt. Everything is torch arithmetic on the waveform, so the truth is differentiable almost
everywhere (the clipping and silence fractions have zero gradient): an oracle optimiser can use it.
``TRUTH_VERSION`` changes whenever this definition does (the debug reward is trained against it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import torch

TRUTH_VERSION = 1
ANALYSIS_RATE = 16_000
N_FFT, HOP = 1024, 256
BAND_EDGES = tuple(float(f) for f in np.geomspace(62.5, 8000.0, 9))
TILT_DB = tuple(float(v) for v in np.linspace(6.0, -6.0, 8))
WORD_DB = 4.0
MISMATCH_DB = 6.0
LEVEL_TARGET_DB, LEVEL_TOLERANCE_DB, LEVEL_SLOPE = -20.0, 8.0, 0.1
CLIP_AT, CLIP_WEIGHT = 0.99, 10.0
SILENCE_DB, SILENCE_FRAME_S, SILENCE_WEIGHT = -50.0, 0.05, 2.0


def prompt_words(prompt: str | None) -> list[str]:
    return re.findall(r"[a-z0-9]+", (prompt or "").lower())


def word_shape(word: str) -> np.ndarray:
    """``(8,)`` the fixed band shape (dB) a word asks for, drawn with the word's SHA-256 as seed."""
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(0.0, WORD_DB, size=len(TILT_DB))


def target_profile(prompt: str | None) -> torch.Tensor:
    """``(8,)`` the zero-mean band profile (dB) ``prompt`` asks for."""
    words = prompt_words(prompt)
    target = np.asarray(TILT_DB, dtype=np.float64)
    if words:
        target = target + sum(word_shape(w) for w in words) / np.sqrt(len(words))
    return torch.tensor(target - target.mean(), dtype=torch.float32)


def band_levels(mono: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` mono at 16 kHz -> ``(B, 8)`` band levels in dB (mean STFT power per band)."""
    window = torch.hann_window(N_FFT, device=mono.device, dtype=mono.dtype)
    if mono.shape[-1] < N_FFT:
        mono = torch.nn.functional.pad(mono, (0, N_FFT - mono.shape[-1]))
    power = torch.stft(mono, N_FFT, HOP, window=window, return_complex=True).abs().pow(2).mean(-1)  # (B, F)
    freqs = torch.fft.rfftfreq(N_FFT, 1.0 / ANALYSIS_RATE).to(mono.device)
    bands = [power[:, (freqs >= lo) & (freqs < hi)].mean(-1) for lo, hi in zip(BAND_EDGES[:-1], BAND_EDGES[1:])]
    return 10.0 * torch.log10(torch.stack(bands, dim=-1) + 1e-10)


def truth_parts(audio: torch.Tensor, sample_rate: int, prompts) -> dict[str, torch.Tensor]:
    """The four parts of :func:`truth`, each ``(B,)``, plus the profile ``(B, 8)`` and level ``(B,)``."""
    from ..reward.audio import check_audio, resample, to_mono

    audio = check_audio(audio, sample_rate).float()
    batch = audio.shape[0]
    prompts = [prompts] * batch if prompts is None or isinstance(prompts, str) else list(prompts)
    if len(prompts) != batch:
        raise ValueError(f"got {len(prompts)} prompts for {batch} clips")
    mono = resample(to_mono(audio), int(sample_rate), ANALYSIS_RATE)
    levels = band_levels(mono)
    profile = levels - levels.mean(dim=-1, keepdim=True)
    target = torch.stack([target_profile(p) for p in prompts]).to(profile)
    balance = -(profile - target).pow(2).mean(dim=-1).sqrt() / MISMATCH_DB
    level = 10.0 * torch.log10(mono.pow(2).mean(dim=-1) + 1e-12)
    loudness = -LEVEL_SLOPE * torch.relu((level - LEVEL_TARGET_DB).abs() - LEVEL_TOLERANCE_DB)
    clipping = -CLIP_WEIGHT * (audio.detach().abs() >= CLIP_AT).float().flatten(1).mean(dim=-1)
    frame = int(SILENCE_FRAME_S * ANALYSIS_RATE)
    usable = mono.shape[-1] // frame * frame
    if usable:
        frames = mono.detach()[:, :usable].reshape(batch, -1, frame)
        quiet = 10.0 * torch.log10(frames.pow(2).mean(dim=-1) + 1e-12) < SILENCE_DB
        silence = -SILENCE_WEIGHT * quiet.float().mean(dim=-1)
    else:
        silence = torch.zeros(batch, device=audio.device)
    return {"balance": balance, "level": loudness, "clipping": clipping, "silence": silence,
            "profile": profile, "level_db": level}


def truth(audio: torch.Tensor, sample_rate: int, prompts: Sequence[str | None] | str | None = None) -> torch.Tensor:
    """The debug world's truth of ``audio (B, C, T)`` at ``sample_rate`` for ``prompts`` -> ``(B,)``
    (higher is better; see the module docstring for the definition)."""
    parts = truth_parts(audio, sample_rate, prompts)
    return parts["balance"] + parts["level"] + parts["clipping"] + parts["silence"]
