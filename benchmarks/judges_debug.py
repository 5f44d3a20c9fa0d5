"""Held-out judges and the hacking alarm in the debug world, where the truth is known.

1. Best-of-16 on the 8 prompts of ``recipes/debug/prompts.txt`` (and on the 8 held-out prompts of
   ``recipes/debug/heldout_prompts.txt``), debug MusicGen and debug Stable Audio, every candidate scored by the
   debug reward, the three debug judges (:data:`tunejury_align.reward.judges.DEBUG_JUDGES`) and the truth. Per
   selection rule (``reward``, ``judges-mean``, ``lcb`` with k = 1) the truth gain of its pick over the mean of
   the 16 candidates, with a 95 % bootstrap interval over prompts; and how well each score ranks the candidates
   by truth (Spearman within prompts, averaged). The judges' check of the alarm on the reward's picks.
2. DITTO (debug Stable Audio) run folders with the judges: the ``fast`` preset on the 8 prompts (truth rises
   for most), and lr 0.5 x 30 iterations without regulariser on the first prompt (the reward is gamed): each
   run's alarm, and over the gamed run's iterates the Spearman of the reward and of the judges' mean with the
   truth.

Ends with one ``RESULT ...`` line. About 5 minutes on 2 cores once the debug reward and judges are cached
(building them: about 9 + 2.5 minutes, once).

    python benchmarks/judges_debug.py
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np

from tunejury_align import BestOfNConfig, DittoConfig, best_of_n
from tunejury_align.debug import truth
from tunejury_align.generators import load_generator
from tunejury_align.recipes.alarm import best_of_n_judges_check
from tunejury_align.recipes.ditto_run import ditto_run_meta, run_ditto
from tunejury_align.recipes.selection import SELECT_MODES, select_winners
from tunejury_align.reward import debug_reward
from tunejury_align.reward.judges import judge_scorers, judges_mean, load_judges
from tunejury_align.reward.metrics import mean_interval, spearman

warnings.filterwarnings("ignore", message=r"torch\.meshgrid")
ROOT = Path(__file__).resolve().parents[1]


def prompts(name: str) -> list[str]:
    return [line.strip() for line in (ROOT / "recipes/debug" / name).read_text().splitlines() if line.strip()]


def interval(values) -> str:
    m = mean_interval(values, bootstrap=2000)
    return f"{m['mean']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}]"


def selection_table(reward, judges, generator_name: str, prompt_set: str) -> dict[str, float]:
    result = best_of_n(load_generator(generator_name), reward, prompts(prompt_set), config=BestOfNConfig(n=16),
                       scorers={"truth": truth, **judge_scorers(reward, judges)})
    scores, extras = result.scores, result.extra_scores
    truths, judged = extras["truth"], judges_mean(extras)
    gains = {}
    for mode in SELECT_MODES:
        picks = select_winners(scores, extras, mode)
        gain = truths[np.arange(len(picks)), picks] - truths.mean(axis=1)
        gains[mode] = float(gain.mean())
        print(f"  {generator_name:<19} {prompt_set:<20} select={mode:<12} truth gain {interval(gain)}")
    rank = {name: np.mean([spearman(v[p], truths[p]) for p in range(len(truths))])
            for name, v in (("reward", scores), ("judges", judged))}
    check = best_of_n_judges_check(scores, judged, result.winners)
    print(f"  {'':<19} {'':<20} Spearman with truth within prompts: reward {rank['reward']:.3f}, judges' mean "
          f"{rank['judges']:.3f}; alarm judges' check: confirmed "
          f"{check['confirmed_fraction']:.0%}, fires {check['fires']}")
    return gains


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-best-of-n", action="store_true", help="only the DITTO runs (part 2)")
    args = parser.parse_args()
    reward = debug_reward()
    judges = load_judges("debug", reward)
    print(f"debug reward + {len(judges)} judges: {[j.name for j in judges]}")
    print("1. best-of-16: truth gain of each selection rule's pick over the mean candidate (95 % over prompts)")
    gains = {}
    for generator_name in () if args.skip_best_of_n else ("debug-musicgen", "debug-stable-audio"):
        for prompt_set in ("prompts.txt", "heldout_prompts.txt"):
            gains[(generator_name, prompt_set)] = selection_table(reward, judges, generator_name, prompt_set)
    mean_gain = {mode: float(np.mean([g[mode] for g in gains.values()])) if gains else float("nan")
                 for mode in SELECT_MODES}

    print("2. DITTO run folders with the judges (alarm)")
    scorers = {"truth": truth, **judge_scorers(reward, judges)}
    generator = load_generator("debug-stable-audio")
    runs = {"fast": (DittoConfig(preset="fast"), prompts("prompts.txt")),
            "strong": (DittoConfig(preset="fast", learning_rate=0.5, iterations=30, noise_regularization=0.0),
                       prompts("prompts.txt")[:1])}
    alarms, tracking = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (config, chosen) in runs.items():
            out = Path(folder) / name
            meta = {**ditto_run_meta(config, chosen, generator, reward), "judges": [j.info() for j in judges]}
            summary = run_ditto(generator, reward, chosen, config, out, meta, scorers=scorers)
            alarms[name] = summary["alarm"]
            print("    " + json.dumps(summary["alarm"]["checks"], default=float)[:3000])
            print("    distribution: " + json.dumps(summary.get("distribution"), default=float)[:1500])
            check = next(c for c in summary["alarm"]["checks"] if c["check"] == "judges")
            print(f"  {name}: reward gain {summary['mean_gain']:+.4f}, truth gain {summary['mean_truth_gain']:+.4f}, "
                  f"judges' gain {check['judges_gain']:+.4f} (confirmed {check['confirmed_fraction']:.0%}); "
                  f"alarm: {summary['alarm']['alarm']} {summary['alarm']['reasons']}")
            records = [json.loads(line) for line in (out / "ditto.jsonl").read_text().splitlines()]
            judged = [np.mean([r[k] for k in r if k.startswith("judge_")]) for r in records]
            tracking[name] = (spearman([r["reward"] for r in records], [r["truth"] for r in records]),
                              spearman(judged, [r["truth"] for r in records]))
            print(f"    over the iterates, Spearman with truth: reward {tracking[name][0]:+.3f}, judges' mean "
                  f"{tracking[name][1]:+.3f}")
    print(f"RESULT select_truth_gain_reward={mean_gain['reward']:.4f} "
          f"select_truth_gain_judges_mean={mean_gain['judges-mean']:.4f} select_truth_gain_lcb={mean_gain['lcb']:.4f} "
          f"ditto_fast_alarm={alarms['fast']['alarm'].replace(' ', '_')} "
          f"ditto_strong_alarm={alarms['strong']['alarm'].replace(' ', '_')} "
          f"strong_spearman_reward_truth={tracking['strong'][0]:.3f} "
          f"strong_spearman_judges_truth={tracking['strong'][1]:.3f}")


if __name__ == "__main__":
    main()
