"""Scoring with held-out judges vs without: what six extra heads cost when they read the reward's features.

The full-size reward (HTSAT-base + RoBERTa-base CLAP, MERT-v1-330M shapes, 2048-d head; random weights:
compute does not depend on weight values) scores ``--batches`` batches of ``--batch`` synthetic 10 s clips at
32 kHz, once as ``reward(audio)`` alone and once as ``reward(audio)`` followed by ``--judges`` judges
(released-layout heads saved to disk and loaded through ``load_judges``, scored by ``judge_scorers`` on the same
audio tensor, as every recipe does), under ``torch.inference_mode``: per batch a plain call and a judged one
back to back (alternating which goes first), ``--repeats`` times. The encoder passes are counted: with judges
there must be exactly as many as without.

    judges_overhead = (reward + judges) / reward, both timed inside the same judged calls   (target <= 1.05)
    judges_overhead_paired = best judged call / best plain call per batch (calls seconds apart, alternated)

The paired ratio carries this machine's call-to-call drift (several % on a shared 2-core CPU: an earlier,
pass-level version of this script measured 1.079 for 6 MLPs that take milliseconds); the first figure times
the judges' own work.

    python benchmarks/judges_overhead.py                  # 6 judges, 2 batches of 8, 2 repeats, CPU
    python benchmarks/judges_overhead.py --batches 1 --repeats 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from cpu import describe_machine

from tunejury_align.reward.fullsize import fullsize_reward
from tunejury_align.reward.head import TuneJuryHead
from tunejury_align.reward.judges import judge_scorers, load_judges

warnings.filterwarnings("ignore", message=r"torch\.meshgrid")
SAMPLE_RATE = 32_000


def synthetic_batch(batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(10 * SAMPLE_RATE) / SAMPLE_RATE
    freqs = 110.0 * 2 ** (torch.rand(batch, 3, 1, generator=generator) * 4)
    tones = torch.sin(2 * torch.pi * freqs * t).sum(dim=1) / 3
    noise = 0.05 * torch.randn(batch, t.numel(), generator=generator)
    return (0.3 * tones + noise).unsqueeze(1)


def save_judges(folder: Path, count: int) -> list[Path]:
    paths = []
    for k in range(count):
        torch.manual_seed(1000 + k)
        paths.append(folder / f"judge_{k}.pt")
        torch.save(TuneJuryHead(2048).eval().state_dict(), paths[-1])
    return paths


class Counter:
    def __init__(self, *modules):
        self.calls = 0
        for module in modules:
            module.register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        self.calls += 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judges", type=int, default=6)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(describe_machine(device))
    reward = fullsize_reward(seed=0, device=device)
    with tempfile.TemporaryDirectory() as folder:
        judges = load_judges([str(p) for p in save_judges(Path(folder), args.judges)], reward)
    scorers = judge_scorers(reward, judges)
    counter = Counter(reward.clap.audio_branch, reward.mert)
    batches = [synthetic_batch(args.batch, seed).to(device) for seed in range(args.batches)]
    prompts = ["lofi hip hop beat with warm piano chords"] * args.batch

    def score(audio: torch.Tensor, with_judges: bool) -> tuple[float, float]:
        """(seconds in the reward, seconds in the judges right after it, on the same audio)."""
        with torch.inference_mode():
            sync(device)
            start = time.perf_counter()
            reward(audio, SAMPLE_RATE, prompts)
            sync(device)
            middle = time.perf_counter()
            if with_judges:
                for fn in scorers.values():
                    fn(audio, SAMPLE_RATE, prompts)
            sync(device)
        return middle - start, time.perf_counter() - middle

    score(batches[0], True)  # warm-up (text embedding, allocator, oneDNN primitives)
    plain, judged, judges_only, passes = [], [], [], {False: 0, True: 0}
    for r in range(args.repeats):  # per batch, plain and judged back to back, alternating which goes first
        for b, audio in enumerate(batches):
            for with_judges in (False, True) if (r + b) % 2 == 0 else (True, False):
                before = counter.calls
                seconds = score(audio, with_judges)
                passes[with_judges] += counter.calls - before
                (judged if with_judges else plain).append((r, b, sum(seconds)))
                if with_judges:
                    judges_only.append((r, b, seconds))
        print(f"repeat {r + 1}: without judges {sum(t for q, _, t in plain if q == r):.2f} s, with {args.judges} "
              f"judges {sum(t for q, _, t in judged if q == r):.2f} s", flush=True)
    if passes[True] != passes[False]:
        sys.exit(f"encoder passes differ: {passes[False]} without judges, {passes[True]} with")

    def best(rows):
        return sum(min(t for r, b, t in rows if b == k) for k in range(args.batches))

    in_reward = sum(t[0] for _, _, t in judges_only)
    in_judges = sum(t[1] for _, _, t in judges_only)
    print(f"{args.batches} batches of {args.batch} x 10 s clips, best repeat per batch: without judges "
          f"{best(plain):.2f} s, with {args.judges} judges {best(judged):.2f} s (paired ratio "
          f"{best(judged) / best(plain):.3f}: the speed of this machine drifts by several % between calls); "
          f"encoder passes {passes[False]} without judges and {passes[True]} with")
    print(f"within the judged calls: reward {in_reward:.2f} s, the {args.judges} judges after it {in_judges:.3f} s "
          f"({1e3 * in_judges / len(judges_only):.1f} ms per batch)")
    print(f"RESULT judges_overhead={(in_reward + in_judges) / in_reward:.4f} "
          f"judges_overhead_paired={best(judged) / best(plain):.3f}")


if __name__ == "__main__":
    main()
