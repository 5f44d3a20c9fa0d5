"""The debug world's second shipped truth: how a clip moves in time, and how tonal it is.

``truth(audio, sample_rate, prompts) -> (B,)`` (higher is better; 0 is a perfect match). Where the first truth
(:mod:`.truth`, ``spectral``) listens to the clip's average spectral balance and level, this one listens to
properties that balance does not show. The clip (mono mix, resampled to 16 kHz with the reward's
torchaudio-equivalent resampler) gives three measures:

1. **Dynamics**: the standard deviation over 50 ms frames of each frame's level (dB of its mean power, floored
   at -80 dB), in dB: steady (near 0) or varying.
2. **Motion**: spectral flux, the mean over consecutive Hann STFT frames (1024 / 256) of the positive change of
   the log-power spectrum (dB, averaged over the 513 bins): how often and how much new sound starts.
3. **Tonality**: spectral flatness (geometric over arithmetic mean of each frame's power spectrum, in dB,
   averaged over frames): near 0 for noise, far below for tones.

Each measure ``m`` is standardised as ``(m - centre) / scale`` with fixed constants (:data:`CENTRE`,
:data:`SCALE`: the typical value and spread of the debug generators' plain clips, so that one unit is a
difference a listener of this world notices). The prompt asks for a target in that space: a prompt-independent
taste, :data:`BASE_TARGET` (this world's listeners like some movement and tonal sound: dynamics and motion one
unit above the centre, flatness one unit below), plus for each word (lower-case letters and digits) a fixed
3-vector drawn from ``N(0, 1)`` with the SHA-256 of ``"temporal " + word`` as seed, summed over the words, divided
by the square root of their number and scaled by :data:`TARGET_SPREAD`. The truth is ``-rms(standardised measures - target)``, clipped
below at -4 so that one wild clip (silence, a click) does not dominate a mean.

Prompts that share words share part of their target, as with the first truth. Everything is torch arithmetic on
the waveform, so it is differentiable almost everywhere. ``TEMPORAL_VERSION`` changes whenever this definition
does (the debug reward trained against it is cached by this module's source anyway).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from .truth import ANALYSIS_RATE, HOP, N_FFT, prompt_words

TEMPORAL_VERSION = 1
MEASURES = ("dynamics", "motion", "tonality")
FRAME_S = 0.05
FLOOR_DB = -80.0
#: typical value and spread of each measure over the debug generators' plain clips (dB)
CENTRE = (2.2, 2.15, -26.0)
SCALE = (0.6, 0.12, 4.0)
BASE_TARGET = (0.7, 0.7, -0.7)
TARGET_SPREAD = 0.7
FLOOR = -4.0


def word_target(word: str) -> np.ndarray:
    """``(3,)`` the fixed standardised target offset a word asks for."""
    seed = int.from_bytes(hashlib.sha256(f"temporal {word}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(0.0, 1.0, size=len(MEASURES))


def target_measures(prompt: str | None) -> torch.Tensor:
    """``(3,)`` the standardised measures ``prompt`` asks for."""
    words = prompt_words(prompt)
    target = np.asarray(BASE_TARGET, dtype=np.float64)
    if words:
        target = target + TARGET_SPREAD * sum(word_target(w) for w in words) / np.sqrt(len(words))
    return torch.tensor(target, dtype=torch.float32)


def measures(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``(B, C, T)`` -> ``(B, 3)`` the raw measures (dynamics, motion, tonality; all in dB)."""
    from ..reward.audio import check_audio, resample, to_mono

    audio = check_audio(audio, sample_rate).float()
    mono = resample(to_mono(audio), int(sample_rate), ANALYSIS_RATE)
    batch = mono.shape[0]
    frame = int(FRAME_S * ANALYSIS_RATE)
    if mono.shape[-1] < 2 * max(frame, N_FFT):
        mono = torch.nn.functional.pad(mono, (0, 2 * max(frame, N_FFT) - mono.shape[-1]))
    usable = mono.shape[-1] // frame * frame
    frames = mono[:, :usable].reshape(batch, -1, frame)
    level = 10.0 * torch.log10(frames.pow(2).mean(dim=-1) + 10 ** (FLOOR_DB / 10))  # (B, F)
    dynamics = level.std(dim=-1, unbiased=False)
    window = torch.hann_window(N_FFT, device=mono.device, dtype=mono.dtype)
    power = torch.stft(mono, N_FFT, HOP, window=window, return_complex=True).abs().pow(2) + 1e-10  # (B, bins, S)
    log_power = 10.0 * torch.log10(power)
    motion = torch.relu(log_power[..., 1:] - log_power[..., :-1]).mean(dim=(1, 2))
    flatness = 10.0 * (torch.log(power).mean(dim=1).exp() / power.mean(dim=1)).log10().mean(dim=-1)
    return torch.stack([dynamics, motion, flatness], dim=-1)


def standardised(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``(B, 3)`` the measures in units of :data:`SCALE` around :data:`CENTRE`."""
    raw = measures(audio, sample_rate)
    return (raw - torch.tensor(CENTRE, device=raw.device)) / torch.tensor(SCALE, device=raw.device)


def truth(audio: torch.Tensor, sample_rate: int, prompts: Sequence[str | None] | str | None = None) -> torch.Tensor:
    """The temporal truth of ``audio (B, C, T)`` at ``sample_rate`` for ``prompts`` -> ``(B,)`` (see the module
    docstring)."""
    values = standardised(audio, sample_rate)
    batch = values.shape[0]
    prompts = [prompts] * batch if prompts is None or isinstance(prompts, str) else list(prompts)
    if len(prompts) != batch:
        raise ValueError(f"got {len(prompts)} prompts for {batch} clips")
    target = torch.stack([target_measures(p) for p in prompts]).to(values)
    return (-(values - target).pow(2).mean(dim=-1).sqrt()).clamp(min=FLOOR)
