"""Write ``tests/data/resample_reference.npz``: torchaudio's ``functional.resample`` outputs that
``tests/test_resample.py`` checks :mod:`tunejury_align.reward.resample` against.

torchaudio is not a dependency of this project and must not enter its environment. Install it
beside the project's torch in a separate folder, without dependencies, and put that folder first
on the path for this one run (from the repository root)::

    pip install --no-deps --target /tmp/ta torchaudio==2.11.1
    PYTHONPATH=/tmp/ta python scripts/make_resample_reference.py tests/data/resample_reference.npz

(Written with torchaudio 2.11.1 beside torch 2.14.1; both versions are stored in the file.)

Contents, all with torchaudio's defaults (``sinc_interp_hann``, ``lowpass_filter_width=6``,
``rolloff=0.99``):

* ``x_<orig>``: int16 input at ``orig`` Hz (seed 0): 1/f noise plus a 997 Hz tone and a tone at
  0.45 of the rate, peak 0.9, ``DURATION`` s plus 7 samples (so ``new * T / orig`` is rarely an
  integer). The float input is ``x / 32768`` (exact in float32 and float64);
* ``y_<orig>_<new>``: ``resample(x / 32768, orig, new)`` in float32 for every pair in ``PAIRS``;
* ``y64_<orig>_<new>``: the same in float64 (float64 input, so torchaudio builds its kernel in
  float64) for the pairs in ``PAIRS_F64``;
* ``lengths``: rows ``(orig, new, T, len)``: output lengths torchaudio returned for inputs of
  zeros long enough (output >= 2**24 samples) that its float32 ceiling can differ from the exact
  ``ceil(new * T / orig)``; chosen so that both the float32 and the exact rule are tested.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torchaudio
import torchaudio.functional as AF

DURATION = 0.06
PAIRS = [
    (44100, 48000), (32000, 48000), (16000, 48000), (48000, 16000), (16000, 24000),
    (44100, 24000), (32000, 24000), (48000, 24000), (22050, 24000),
    (44100, 16000),  # the train protocol's first step for CD-rate audio
    (12345, 24000),  # odd: reduced rates 823 -> 1600
]
PAIRS_F64 = [(44100, 48000)]


def make_input(rate: int, rng: np.random.Generator) -> np.ndarray:
    n = int(round(DURATION * rate)) + 7
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    spectrum[1:] /= np.sqrt(freqs[1:])  # 1/f power
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n)
    noise /= np.abs(noise).max()
    time = np.arange(n) / rate
    mix = noise + 0.5 * np.sin(2 * np.pi * 997.0 * time) + 0.25 * np.sin(2 * np.pi * 0.45 * rate * time + 1.0)
    mix *= 0.9 / np.abs(mix).max()
    return np.round(mix * 32768.0).clip(-32768, 32767).astype(np.int16)


def long_lengths() -> list[tuple[int, int, int, int]]:
    """(orig, new, T, torchaudio's output length) for a few outputs longer than 2**24 samples."""
    rows = []
    for orig_freq, new_freq in [(44100, 48000), (44100, 24000)]:
        gcd = math.gcd(orig_freq, new_freq)
        orig, new = orig_freq // gcd, new_freq // gcd
        start = math.ceil(2**24 * orig / new) + 1000
        found = {"float32 != exact": [], "float32 == exact": []}
        for length in range(start, start + 10_000):
            exact = -(-new * length // orig)
            f32 = math.ceil(float(np.float32(new * length / orig)))
            key = "float32 != exact" if f32 != exact else "float32 == exact"
            if len(found[key]) < 2:
                found[key].append(length)
            if all(len(v) == 2 for v in found.values()):
                break
        for length in sorted(found["float32 != exact"] + found["float32 == exact"]):
            out = AF.resample(torch.zeros(length), orig_freq, new_freq)
            rows.append((orig_freq, new_freq, length, out.shape[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = {"torch_version": np.array(torch.__version__), "torchaudio_version": np.array(torchaudio.__version__)}
    for rate in sorted({orig for orig, _ in PAIRS}):
        data[f"x_{rate}"] = make_input(rate, rng)
    for orig, new in PAIRS:
        x = torch.from_numpy(data[f"x_{orig}"].astype(np.float32) / 32768.0)
        data[f"y_{orig}_{new}"] = AF.resample(x, orig, new).numpy()
        if (orig, new) in PAIRS_F64:
            data[f"y64_{orig}_{new}"] = AF.resample(x.double(), orig, new).numpy()
    data["lengths"] = np.array(long_lengths(), dtype=np.int64)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **data)
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KiB, {len(PAIRS)} pairs, lengths {data['lengths'].tolist()}")


if __name__ == "__main__":
    main()
