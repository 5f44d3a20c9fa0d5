"""The debug world, measured: how well its reward tracks its truth, and what each recipe gains in
reward and in truth (with 95 % bootstrap intervals over prompts), on the debug models.

    python benchmarks/debug_world.py            # a few minutes on 2 CPU cores (the first run also builds the reward)

Ends with ``RESULT proxy_accuracy=... bon16_truth_gain=... ditto_truth_gain=... expert_iter_truth_gain=...
spearman_reward_truth=...``. The numbers are the debug world's, not the real models': they show whether a
method moves the truth its reward stands for (see ``tunejury_align.debug``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from tunejury_align import BestOfNConfig, DittoConfig, ExpertIterConfig, best_of_n, ditto, expert_iteration
from tunejury_align.debug import truth
from tunejury_align.debug.world import HELDOUT_PROMPTS, TRAIN_PROMPTS, pairwise_accuracy_vs_truth, world_samples
from tunejury_align.generators import load_generator
from tunejury_align.reward import debug_reward
from tunejury_align.reward.metrics import spearman

ROOT = Path(__file__).resolve().parents[1]
warnings.filterwarnings("ignore")


def interval(values, seed: int = 0, resamples: int = 2000) -> tuple[float, float, float]:
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), float(low), float(high)


def show(name: str, values) -> float:
    mean, low, high = interval(values)
    print(f"  {name:<40s} {mean:+.4f}  [{low:+.4f}, {high:+.4f}]", flush=True)
    return mean


def lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=16, help="best-of-N candidates")
    parser.add_argument("--ditto-prompts", type=int, default=8)
    args = parser.parse_args()
    prompts = lines(ROOT / "recipes/debug/prompts.txt")
    started = time.perf_counter()
    reward = debug_reward(progress=lambda name: print(f"  (building the debug reward: {name} done)", flush=True))
    print(f"debug reward ready in {time.perf_counter() - started:.0f} s", flush=True)

    # 1. The proxy against the truth on fresh clips (seeds never used in training)
    fresh = world_samples(reward.features, list(TRAIN_PROMPTS) + list(HELDOUT_PROMPTS), 3, first_seed=50_000)
    with torch.no_grad():
        accuracy = pairwise_accuracy_vs_truth(reward.head(fresh.features), fresh)
    print(f"proxy pairwise accuracy vs truth on {len(fresh)} fresh clips: {accuracy:.3f}", flush=True)

    # 2. Best-of-N: truth of the reward's pick at N vs N = 1
    all_rewards, all_truths, bon = [], [], {}
    for name in ("debug-musicgen", "debug-stable-audio"):
        generator = load_generator(name)
        result = best_of_n(generator, reward, prompts, config=BestOfNConfig(n=args.n, bootstrap=0),
                           scorers={"truth": truth})
        truths = result.extra_scores["truth"]
        print(f"best-of-{args.n}, {name}, {len(prompts)} prompts:")
        # best-of-1's expected value is the mean over the N single draws (less noisy than draw 0)
        show("reward gain (N vs 1)", result.scores.max(axis=1) - result.scores.mean(axis=1))
        bon[name] = show("truth gain of the reward's pick", truths[np.arange(len(prompts)), result.winners]
                         - truths.mean(axis=1))
        show("truth gain of the truth's own pick (oracle)", truths.max(axis=1) - truths.mean(axis=1))
        all_rewards += result.scores.flatten().tolist()
        all_truths += truths.flatten().tolist()
    rho = spearman(all_rewards, all_truths)
    print(f"Spearman(reward, truth) over all {len(all_rewards)} best-of-N candidates: {rho:.3f}", flush=True)

    # 3. DITTO (fast preset) on debug-stable-audio, and a strong setting that games the reward
    generator = load_generator("debug-stable-audio")
    gains, rising = [], 0
    for prompt in prompts[: args.ditto_prompts]:
        result = ditto(generator, reward, prompt, config=DittoConfig(preset="fast"), scorers={"truth": truth})
        gains.append(result.optimised_extras["truth"] - result.baseline_extras["truth"])
        rising += gains[-1] > 0
    print(f"DITTO fast preset, debug-stable-audio, {len(gains)} prompts (truth rose for {rising}):")
    ditto_gain = show("truth gain (kept iterate vs iterate 0)", gains)
    strong = DittoConfig(preset="fast", learning_rate=0.5, iterations=30)
    for prompt in prompts[:2]:
        result = ditto(generator, reward, prompt, config=strong, scorers={"truth": truth})
        peak = max(h.extras["truth"] for h in result.history)
        print(f"  strong (lr 0.5, 30 iterations) '{prompt}': reward {result.baseline_reward:.3f} -> "
              f"{result.optimised_reward:.3f}; truth {result.baseline_extras['truth']:.3f} -> "
              f"{result.optimised_extras['truth']:.3f} (its best on the way: {peak:.3f})", flush=True)

    # 4. Expert iteration with the shipped debug config: held-out truth, round 0 vs round 1
    config_path = ROOT / "recipes/debug/expert_iter.yaml"
    from tunejury_align.config import load_config

    config = load_config(ExpertIterConfig, config_path)
    with tempfile.TemporaryDirectory() as folder:
        rows = expert_iteration(load_generator("debug-musicgen"), reward, prompts, config, out=folder,
                                heldout=lines(ROOT / "recipes/debug/heldout_prompts.txt"), scorers={"truth": truth})
    ei_gain = rows[-1]["eval_truth_mean"] - rows[0]["eval_truth_mean"]
    print(f"expert iteration ({config_path.name}): held-out truth {rows[0]['eval_truth_mean']:.4f} -> "
          f"{rows[-1]['eval_truth_mean']:.4f}, reward {rows[0]['eval_reward_mean']:.4f} -> "
          f"{rows[-1]['eval_reward_mean']:.4f}")
    print(f"total {time.perf_counter() - started:.0f} s")
    print(f"RESULT proxy_accuracy={accuracy:.3f} bon16_truth_gain={bon['debug-musicgen']:.4f} "
          f"bon16_truth_gain_stable_audio={bon['debug-stable-audio']:.4f} ditto_truth_gain={ditto_gain:.4f} "
          f"expert_iter_truth_gain={ei_gain:.4f} spearman_reward_truth={rho:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
