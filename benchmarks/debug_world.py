"""The debug world, measured: how well its reward and judges track its truth, and what each recipe gains in reward
and in truth (with 95 % bootstrap intervals over prompts), on the debug models, under each truth asked for.

    python benchmarks/debug_world.py                       # both shipped truths; ~15 minutes on 2 CPU cores
    python benchmarks/debug_world.py --truth temporal      # one world
    python benchmarks/debug_world.py --truth mymodule:my_truth

Per truth (a world: its reward and judges are trained on that truth; the first run builds them):

* the world-quality criteria of ``tunejury_align.debug.proxy`` (pairwise accuracy on fresh clips, Spearman over
  best-of-N candidates) for the reward and each judge;
* best-of-16 on debug MusicGen and debug Stable Audio (the 8 prompts of ``recipes/debug/prompts.txt``): the truth of
  the reward's pick minus the mean candidate's (best-of-1's expected value), the reward's gain, and the truth's own
  pick (the oracle);
* pruned best-of-16 on debug MusicGen (prune at 25 %, keep a quarter): the pruned winner's truth against the mean
  candidate's, and the compute ratio;
* particle steering (SMC, K = 8, potential max, lambda 10, ESS 0.5) against best-of-8 on debug Stable Audio, same
  seeds and generator compute: each pick's truth gain over the plain sample (candidate 0);
* DITTO ``fast`` and a strong setting (lr 0.5, 30 iterations, no regulariser) on debug Stable Audio: the kept
  iterate's truth against iterate 0's;
* expert iteration with ``recipes/debug/expert_iter.yaml``: the held-out truth of round 1 against round 0.

Each world ends with ``RESULT truth=... proxy_accuracy=... spearman_reward_truth=... bon16_truth_gain=...
bon16_truth_gain_stable_audio=... pruned_truth_gain=... smc_truth_gain=... bon8_truth_gain=... ditto_truth_gain=...
strong_ditto_truth_gain=... expert_iter_truth_gain=...``. The numbers are the debug world's, not the real models':
they show whether a method moves the truth its reward stands for (see ``tunejury_align.debug``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from tunejury_align import BestOfNConfig, DittoConfig, ExpertIterConfig, best_of_n, ditto, expert_iteration
from tunejury_align.debug.build import build_world
from tunejury_align.debug.proxy import world_quality
from tunejury_align.debug.worlds import truth_label
from tunejury_align.generators import load_generator
from tunejury_align.recipes.best_of_n_prune import pruned_best_of_n
from tunejury_align.recipes.smc import SMCConfig, smc
from tunejury_align.reward import debug_reward
from tunejury_align.reward.judges import load_judges
from tunejury_align.reward.metrics import mean_interval

ROOT = Path(__file__).resolve().parents[1]
warnings.filterwarnings("ignore")


def show(name: str, values) -> float:
    m = mean_interval(np.asarray(values, dtype=np.float64))
    print(f"  {name:<52s} {m['mean']:+.4f}  [{m['low']:+.4f}, {m['high']:+.4f}]", flush=True)
    return m["mean"]


def lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def measure(truth_spec: str, prompts: list[str], args) -> dict:
    started = time.perf_counter()
    build_world(truth_spec, judges=True)
    reward = debug_reward(truth=truth_spec)
    truth = reward.world_truth
    judges = load_judges("debug", reward)
    scorers = {"truth": truth}
    print(f"\n== world: truth {truth_label(truth)} (built or loaded in {time.perf_counter() - started:.0f} s)", flush=True)
    out: dict = {"truth": truth_label(truth)}

    # 1. The world's own quality
    quality = world_quality([(reward, judges)])[0]
    for name, head in quality["heads"].items():
        print(f"  {name:<24s} accuracy {head['accuracy']:.3f}  spearman {head['spearman']:.3f}  within-prompt "
              f"{head['within_prompt_spearman']:.3f}", flush=True)
    out["proxy_accuracy"], out["spearman_reward_truth"] = quality["heads"]["debug"]["accuracy"], \
        quality["heads"]["debug"]["spearman"]

    # 2. Best-of-16: truth of the reward's pick at N = 16 vs N = 1 (the mean over the 16 single draws)
    for name, key in (("debug-musicgen", "bon16_truth_gain"), ("debug-stable-audio", "bon16_truth_gain_stable_audio")):
        result = best_of_n(load_generator(name), reward, prompts, config=BestOfNConfig(n=16, bootstrap=0),
                           scorers=scorers)
        truths, rows = result.extra_scores["truth"], np.arange(len(prompts))
        print(f"best-of-16, {name}, {len(prompts)} prompts:")
        show("reward gain (N = 16 vs 1)", result.scores.max(axis=1) - result.scores.mean(axis=1))
        out[key] = show("truth gain of the reward's pick", truths[rows, result.winners] - truths.mean(axis=1))
        show("truth gain of the truth's own pick (oracle)", truths.max(axis=1) - truths.mean(axis=1))

    # 3. Pruned best-of-16 (MusicGen): the pruned winner's truth against the mean candidate's
    generator = load_generator("debug-musicgen")
    full = best_of_n(generator, reward, prompts, config=BestOfNConfig(n=16, bootstrap=0), scorers=scorers)
    pruned = pruned_best_of_n(generator, reward, prompts, BestOfNConfig(n=16, prune=True, prune_at=[0.25],
                                                                         prune_keep=0.25), scorers=scorers)
    winners = np.array([p.extras["truth"][p.winner] for p in pruned])
    print("pruned best-of-16, debug-musicgen (prune at 25 %, keep 4):")
    out["pruned_truth_gain"] = show("truth gain of the pruned winner", winners - full.extra_scores["truth"].mean(axis=1))
    passes = sum(p.compute.generator_passes for p in pruned)
    print(f"  compute ratio to the full run {passes / full.compute.generator_passes:.3f}", flush=True)

    # 4. SMC vs best-of-8 (Stable Audio), same seeds and generator compute; gains over the plain sample
    generator = load_generator("debug-stable-audio")
    bon = best_of_n(generator, reward, prompts, config=BestOfNConfig(n=8, candidates_per_batch=8, bootstrap=0),
                    scorers=scorers)
    steered = smc(generator, reward, prompts, SMCConfig(particles=8, potential="max", temperature=10.0,
                                                         resample_every=1, ess_threshold=0.5), scorers=scorers)
    base, rows = bon.extra_scores["truth"][:, 0], np.arange(len(prompts))
    print("particle steering vs best-of-8, debug-stable-audio (gain over the plain sample):")
    out["bon8_truth_gain"] = show("best-of-8: truth gain", bon.extra_scores["truth"][rows, bon.winners] - base)
    out["smc_truth_gain"] = show("SMC (K = 8): truth gain",
                                 np.array([p.extras["truth"][p.chosen].item() for p in steered.prompts]) - base)
    show("SMC (K = 8): reward gain", np.array([p.rewards[p.chosen].item() for p in steered.prompts]) - bon.scores[:, 0])

    # 5. DITTO (Stable Audio): kept iterate vs iterate 0
    for key, label, config in (
            ("ditto_truth_gain", "DITTO fast", DittoConfig(preset="fast")),
            ("strong_ditto_truth_gain", "DITTO lr 0.5, 30 iterations, no regulariser",
             DittoConfig(preset="fast", learning_rate=0.5, iterations=30, noise_regularization=0.0))):
        gains, reward_gains = [], []
        for prompt in prompts[:args.ditto_prompts]:
            result = ditto(generator, reward, prompt, config=config, scorers=scorers)
            gains.append(result.optimised_extras["truth"] - result.baseline_extras["truth"])
            reward_gains.append(result.optimised_reward - result.baseline_reward)
        print(f"{label}, debug-stable-audio, {len(gains)} prompts (truth rose for {sum(g > 0 for g in gains)}):")
        show("reward gain", reward_gains)
        out[key] = show("truth gain (kept iterate vs iterate 0)", gains)

    # 6. Expert iteration with the shipped debug config: held-out truth, round 0 vs round 1
    from tunejury_align.config import load_config

    config = load_config(ExpertIterConfig, ROOT / "recipes/debug/expert_iter.yaml")
    with tempfile.TemporaryDirectory() as folder:
        rows = expert_iteration(load_generator("debug-musicgen"), reward, prompts, config, out=folder,
                                heldout=lines(ROOT / "recipes/debug/heldout_prompts.txt"), scorers=scorers)
    out["expert_iter_truth_gain"] = rows[-1]["eval_truth_mean"] - rows[0]["eval_truth_mean"]
    print(f"expert iteration (recipes/debug/expert_iter.yaml): held-out truth {rows[0]['eval_truth_mean']:.4f} -> "
          f"{rows[-1]['eval_truth_mean']:.4f} ({out['expert_iter_truth_gain']:+.4f}), reward "
          f"{rows[0]['eval_reward_mean']:.4f} -> {rows[-1]['eval_reward_mean']:.4f}")
    print(f"  ({time.perf_counter() - started:.0f} s for this world)", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", nargs="+", default=["spectral", "temporal"],
                        help="the worlds' truths: shipped names or package.module:function (default: both shipped)")
    parser.add_argument("--ditto-prompts", type=int, default=8)
    args = parser.parse_args()
    prompts = lines(ROOT / "recipes/debug/prompts.txt")
    results = [measure(spec, prompts, args) for spec in args.truth]
    print()
    for result in results:
        name = result.pop("truth")
        print(f"RESULT truth={name.split(' ')[0]} " + " ".join(f"{k}={v:.4f}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
