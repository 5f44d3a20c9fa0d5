"""Particle steering and early-pruned best-of-N against best-of-N, in the debug world, at equal generator
compute, on the same prompts and seeds.

    python benchmarks/steering.py            # ~10-20 minutes on 2 CPU cores (the first run also builds the reward)

1. Stable Audio (debug, 4 steps): best-of-K vs SMC with K particles (both ``K * steps`` denoiser evaluations; particle k
   starts from candidate k's seed). Gain = mean over prompts of the pick's value minus candidate 0's (the plain
   sample, N = 1), for the reward and for the truth.
2. MusicGen (debug): best-of-16 vs pruned best-of-16 (one prune point, keep a quarter). ``prune_winner_kept``: the
   fraction of prompts whose pruned winner's reward is within the full run's interval of its winner, i.e. at
   least the full winner's reward minus the half-width of the full run's 95 % bootstrap interval of the mean
   best reward (the noise level of the full run's own estimate); ``winner_survived`` counts exact survival.

Ends with ``RESULT smc_vs_bon_truth=... smc_vs_bon_reward=... prune_compute_ratio=... prune_winner_kept=...``
followed by the four gains behind the two ratios (a ratio of gains near zero means nothing on its own).
Debug-world numbers (tiny models, a learned proxy reward): they say whether a method moves the truth its reward
stands for here, not what it does on the real models.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from tunejury_align import BestOfNConfig, best_of_n
from tunejury_align.debug import truth
from tunejury_align.debug.world import HELDOUT_PROMPTS
from tunejury_align.generators import load_generator
from tunejury_align.recipes.best_of_n_prune import pruned_best_of_n
from tunejury_align.recipes.smc import SMCConfig, smc
from tunejury_align.reward import debug_reward
from tunejury_align.reward.metrics import mean_interval

warnings.filterwarnings("ignore")


def smc_vs_bon(reward, prompts, args) -> dict:
    generator = load_generator("debug-stable-audio")
    generation = {"steps": args.steps}
    start = time.perf_counter()
    bon = best_of_n(generator, reward, prompts, config=BestOfNConfig(n=args.k, candidates_per_batch=args.k,
                                                                     bootstrap=0, generation=generation),
                    scorers={"truth": truth})
    bon_seconds = time.perf_counter() - start
    config = SMCConfig(particles=args.k, potential=args.potential, temperature=args.temperature,
                       resample_every=1, ess_threshold=args.ess, generation=generation)
    steered = smc(generator, reward, prompts, config, scorers={"truth": truth})
    rows = np.arange(len(prompts))
    base = {"reward": bon.scores[:, 0], "truth": bon.extra_scores["truth"][:, 0]}
    picks = {"reward": bon.scores[rows, bon.winners], "truth": bon.extra_scores["truth"][rows, bon.winners]}
    chosen = {"reward": np.array([p.rewards[p.chosen].item() for p in steered.prompts]),
              "truth": np.array([p.extras["truth"][p.chosen].item() for p in steered.prompts])}
    result = {"bon_seconds": bon_seconds, "smc": steered.compute.as_dict(), "bon": bon.compute.as_dict()}
    for name in ("reward", "truth"):
        result[f"bon_{name}_gain"] = mean_interval(picks[name] - base[name])
        result[f"smc_{name}_gain"] = mean_interval(chosen[name] - base[name])
    return result


def prune_vs_full(reward, prompts, args) -> dict:
    generator = load_generator("debug-musicgen")
    full_config = BestOfNConfig(n=16, candidates_per_batch=16, bootstrap=1000)
    full = best_of_n(generator, reward, prompts, config=full_config)
    pruned = pruned_best_of_n(generator, reward, prompts, BestOfNConfig(
        n=16, prune=True, prune_at=[args.prune_at], prune_keep=args.prune_keep))
    last = full.curve[-1]
    half_width = (last["high"] - last["low"]) / 2
    full_best = np.nanmax(full.scores, axis=1)
    pruned_best = np.array([p.scores[p.winner] for p in pruned])
    passes = sum(p.compute.generator_passes for p in pruned)
    return {"compute_ratio": passes / full.compute.generator_passes,
            "winner_kept": float(np.mean(pruned_best >= full_best - half_width)),
            "winner_survived": float(np.mean([p.winner == w for p, w in zip(pruned, full.winners)])),
            "half_width": half_width, "full_mean": float(full_best.mean()), "pruned_mean": float(pruned_best.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8, help="held-out debug prompts used (at most 8)")
    parser.add_argument("--k", type=int, default=8, help="particles = best-of-N's N for the SMC comparison")
    parser.add_argument("--steps", type=int, default=4,
                        help="sampler steps of the Stable Audio comparison (4: the debug world's own setting, the "
                             "one its reward was trained on)")
    parser.add_argument("--potential", default="max")
    parser.add_argument("--temperature", type=float, default=10.0)
    parser.add_argument("--ess", type=float, default=0.5)
    parser.add_argument("--prune-at", type=float, default=0.25)
    parser.add_argument("--prune-keep", type=float, default=0.25)
    parser.add_argument("--skip-smc", action="store_true", help="only the pruning comparison (prints no smc ratios)")
    args = parser.parse_args()
    prompts = list(HELDOUT_PROMPTS[:args.prompts])
    reward = debug_reward()
    steering = {} if args.skip_smc else smc_vs_bon(reward, prompts, args)
    for key, value in steering.items():
        print(key, value, flush=True)
    prune = prune_vs_full(reward, prompts, args)
    for key, value in prune.items():
        print(key, value, flush=True)
    ratio = {name: steering[f"smc_{name}_gain"]["mean"] / steering[f"bon_{name}_gain"]["mean"] if steering
             else float("nan") for name in ("truth", "reward")}
    print(f"RESULT smc_vs_bon_truth={ratio['truth']:.3f} smc_vs_bon_reward={ratio['reward']:.3f} "
          f"prune_compute_ratio={prune['compute_ratio']:.3f} prune_winner_kept={prune['winner_kept']:.3f}"
          # the gains behind the ratios: a ratio of two gains near zero (or of opposite sign) means nothing alone
          + "".join(f" {m}_{name}_gain={steering[f'{m}_{name}_gain']['mean']:.4f}" for m in ("smc", "bon")
                    for name in ("truth", "reward") if steering))


if __name__ == "__main__":
    main()
