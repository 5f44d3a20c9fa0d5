"""Write a few short synthetic clips (tones, a chord, noise) to score: ``python examples/make_demo_audio.py DIR``."""

import sys
from pathlib import Path

import numpy as np
import soundfile as sf


def main(out: str = "demo_audio", sample_rate: int = 44_100, seconds: float = 4.0) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    rng = np.random.default_rng(0)
    clips = {
        "tone_a440.wav": 0.3 * np.sin(2 * np.pi * 440 * t),
        "chord_cmaj.wav": 0.2 * sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0)),
        "noise.wav": 0.1 * rng.standard_normal(t.size),
    }
    for name, wave in clips.items():
        sf.write(folder / name, np.stack([wave, wave], axis=1).astype(np.float32), sample_rate, subtype="PCM_16")
    print(f"wrote {len(clips)} clips to {folder}/")


if __name__ == "__main__":
    main(*sys.argv[1:2])
