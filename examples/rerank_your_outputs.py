"""Rerank audio your own generator already produced: score candidates, keep the best per prompt.

    python examples/rerank_your_outputs.py --reward debug          # offline, tiny random reward
    python examples/rerank_your_outputs.py --reward TuneJury/tunejury

Replace `my_candidates()` with your generator's outputs: a (N, C, T) tensor per prompt at your
sample rate (or read files with `reward.score_files(paths, prompts)`).
"""

import argparse

import torch

from tunejury_align.reward import TuneJuryReward


def my_candidates(prompt: str, n: int, sample_rate: int) -> torch.Tensor:
    """Stand-in for your generator: n seeded 2 s stereo clips, (n, 2, T)."""
    generator = torch.Generator().manual_seed(abs(hash(prompt)) % 2**31)
    t = torch.arange(2 * sample_rate) / sample_rate
    freqs = 110 + 770 * torch.rand(n, 1, 1, generator=generator)
    return 0.3 * torch.sin(2 * torch.pi * freqs * t).expand(n, 2, -1).clone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward", default="debug")
    parser.add_argument("--n", type=int, default=4)
    args = parser.parse_args()
    reward = TuneJuryReward.from_pretrained(args.reward)
    sample_rate = 44_100
    for prompt in ["lofi hip hop beat", "epic orchestral soundtrack"]:
        candidates = my_candidates(prompt, args.n, sample_rate)
        with torch.no_grad():
            scores = reward(candidates, sample_rate, [prompt] * args.n)  # one batched call, text encoded once
        best = int(scores.argmax())
        label = " (debug reward)" if reward.is_debug else ""
        print(f"{prompt!r}: best candidate {best} with reward {scores[best]:.4f}{label}; all {scores.tolist()}")


if __name__ == "__main__":
    main()
