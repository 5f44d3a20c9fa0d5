"""DITTO on a diffusers pipeline you already hold, with any differentiable reward.

Runs offline in seconds on the tiny debug Stable Audio pipeline and the debug reward (their numbers
mean nothing)::

    python examples/ditto_with_your_pipeline.py --out runs/ditto-example

With the real models, replace the two lines marked ``# <- yours``::

    pipe = StableAudioPipeline.from_pretrained("stabilityai/stable-audio-open-1.0").to("cuda")
    reward = TuneJuryReward.from_pretrained("TuneJury/tunejury", device="cuda")

An ``AudioLDM2Pipeline`` works the same way (with its DDIM scheduler). ``ditto`` wraps the pipeline in
the library's adapter, which puts its modules in eval mode and freezes them (in place); only the
initial noise is optimised. Any ``reward(audio (B, C, T), sample_rate, prompts) -> (B,)`` works.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

from tunejury_align.generators.stable_audio import tiny_stable_audio
from tunejury_align.recipes.ditto import DittoConfig, ditto
from tunejury_align.reward import TuneJuryReward
from tunejury_align.rundir import atomic_write_audio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt", default="lofi hip hop beat with warm piano chords")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="sampler steps")
    parser.add_argument("--out", type=Path, help="write baseline.wav and optimised.wav here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Should have t")  # torchsde, Stable Audio's SDE noise
    warnings.filterwarnings("ignore", message=r"torch\.meshgrid")  # laion-clap's HTSAT

    pipe = tiny_stable_audio()  # <- yours: StableAudioPipeline.from_pretrained(...)
    reward = TuneJuryReward.from_pretrained("debug")  # <- yours: TuneJuryReward.from_pretrained("TuneJury/tunejury")

    config = DittoConfig(preset="fast", iterations=args.iterations, sampler_steps=args.steps,
                         generation={"duration": 1.0})
    result = ditto(pipe, reward, args.prompt, config=config,
                   on_iteration=lambda r: print(f"iteration {r.iteration}: reward {r.reward:.4f}  "
                                                f"|noise| {r.noise_norm:.2f}  {r.seconds:.2f} s"))
    print(f"reward {result.baseline_reward:.4f} -> {result.optimised_reward:.4f} "
          f"(best iterate {result.best_iteration}){' [debug world: the reward is a learned proxy of a known truth]' if reward.is_debug else ''}")
    if args.out is not None:
        atomic_write_audio(args.out / "baseline.wav", result.baseline_audio, result.sample_rate)
        atomic_write_audio(args.out / "optimised.wav", result.optimised_audio, result.sample_rate)
        torch.save(result.optimised_noise, args.out / "optimised_noise.pt")
        print(f"wrote {args.out}/baseline.wav, optimised.wav, optimised_noise.pt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
