"""Best-of-N around your own `generate(prompts, seeds) -> (B, C, T)` function.

    python examples/best_of_n_your_generate.py --reward debug

Any callable works as long as candidate i depends only on (prompts[i], seeds[i]); `best_of_n`
calls it with seeds base_seed + c and scores the results with the reward in batches.
"""

import argparse

import torch

from tunejury_align.recipes.best_of_n import BestOfNConfig, best_of_n
from tunejury_align.reward import TuneJuryReward

SAMPLE_RATE = 32_000


def my_generate(prompts: list[str], seeds: list[int]) -> torch.Tensor:
    """Your model here. This stand-in makes a seeded chord per candidate: (B, 1, T)."""
    clips = []
    for _prompt, seed in zip(prompts, seeds):
        g = torch.Generator().manual_seed(seed)
        t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
        root = 110 + 330 * torch.rand(1, generator=g)
        chord = sum(torch.sin(2 * torch.pi * root * ratio * t) for ratio in (1.0, 1.25, 1.5)) / 3
        clips.append(0.3 * chord.unsqueeze(0))
    return torch.stack(clips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward", default="debug")
    parser.add_argument("--n", type=int, default=8)
    args = parser.parse_args()
    reward = TuneJuryReward.from_pretrained(args.reward)
    prompts = ["warm piano chords", "bright synth arpeggio"]
    config = BestOfNConfig(n=args.n, candidates_per_batch=4, prompt_prefix="", bootstrap=200)
    result = best_of_n(my_generate, reward, prompts, config=config, sample_rate=SAMPLE_RATE)
    for prompt, winner, row in zip(prompts, result.winners, result.scores):
        print(f"{prompt!r}: winner seed {config.base_seed + winner}, reward {row[winner]:.4f}")
    for point in result.curve:
        print(f"N={point['n']}: mean best reward {point['mean']:.4f} [{point['low']:.4f}, {point['high']:.4f}]")


if __name__ == "__main__":
    main()
