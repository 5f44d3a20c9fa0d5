"""Held-out judges and the hacking alarm in the debug world, where the truth is known.

1. Best-of-16 on the 8 prompts of ``recipes/debug/prompts.txt`` (and on the 8 held-out prompts of
   ``recipes/debug/heldout_prompts.txt``), debug MusicGen and debug Stable Audio, every candidate scored by the
   debug reward, the six debug judges (:data:`tunejury_align.reward.judges.DEBUG_JUDGES`: three on the reward's
   encoders, three on other tiny encoders) and the truth. Per selection rule (``reward``, ``judges-mean``,
   ``lcb`` with k = 1) the truth gain of its pick over the mean of the 16 candidates, with a 95 % bootstrap
   interval over prompts; and how well each score ranks the candidates by truth (Spearman within prompts,
   averaged). The judges' check of the alarm on the reward's picks.
2. DITTO (debug Stable Audio) run folders with the judges: the ``fast`` preset on the 8 prompts (truth rises
   for most), and lr 0.5 x 30 iterations without regulariser on the first ``--strong-prompts`` (default 8; the
   reward is gamed): each run's alarm, and how well the reward, the judges' mean and each family of judges track
   the truth: each score's kept-iterate gain in units of its spread over the plain samples against the truth's
   (:func:`~tunejury_align.recipes.alarm.standardised_gain`), and the Spearman with the truth over the iterates.

Ends with one ``RESULT ...`` line. 7 min 52 s on 2 cores once the debug reward and judges are cached (building
them: about 23 minutes, once).

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
from tunejury_align.recipes.alarm import best_of_n_judges_check, standardised_gain
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
    checks = {own: best_of_n_judges_check(scores, judges_mean({n: v for n, v in extras.items() if n in {
        "judge_" + j.name for j in judges if j.own_encoders == own}}), result.winners) for own in (False, True)}
    print(f"  {'':<19} {'':<20} Spearman with truth within prompts: reward {rank['reward']:.3f}, judges' mean "
          f"{rank['judges']:.3f}; alarm judges' checks (reward's encoders / own encoders): confirmed "
          + " / ".join(f"{c['confirmed_fraction']:.0%}, fires {c['fires']}" for c in checks.values()))
    return gains


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-best-of-n", action="store_true", help="only the DITTO runs (part 2)")
    parser.add_argument("--strong-prompts", type=int, default=8, help="prompts of the strong (gamed) DITTO run")
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
    families = {"judges": [j.name for j in judges],  # all; on the reward's encoders; on their own
                "shared-encoder judges": [j.name for j in judges if not j.own_encoders],
                "other-encoder judges": [j.name for j in judges if j.own_encoders]}
    generator = load_generator("debug-stable-audio")
    runs = {"fast": (DittoConfig(preset="fast"), prompts("prompts.txt")),
            "strong": (DittoConfig(preset="fast", learning_rate=0.5, iterations=30, noise_regularization=0.0),
                       prompts("prompts.txt")[:args.strong_prompts])}
    alarms, tracking = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (config, chosen) in runs.items():
            out = Path(folder) / name
            meta = {**ditto_run_meta(config, chosen, generator, reward), "judges": [j.info() for j in judges]}
            summary = run_ditto(generator, reward, chosen, config, out, meta, scorers=scorers)
            alarms[name] = summary["alarm"]
            print("    " + json.dumps(summary["alarm"]["checks"], default=float)[:3000])
            print("    distribution: " + json.dumps(summary.get("distribution"), default=float)[:1500])
            judged = "; ".join(f"judges on {c['family']}: gain {c['judges_gain']:+.4f}, confirmed "
                               f"{c['confirmed_fraction']:.0%}, fires {c['fires']}"
                               for c in summary["alarm"]["checks"] if c["check"] == "judges")
            print(f"  {name}: reward gain {summary['mean_gain']:+.4f}, truth gain {summary['mean_truth_gain']:+.4f}; "
                  f"{judged}; alarm: {summary['alarm']['alarm']} {summary['alarm']['reasons']}")
            tracking[name] = iterate_tracking(out / "ditto.jsonl", len(chosen), families)
            tracking[name].update(standardised_gains(out, len(chosen), families))
    strong = tracking["strong"]
    print(f"RESULT select_truth_gain_reward={mean_gain['reward']:.4f} "
          f"select_truth_gain_judges_mean={mean_gain['judges-mean']:.4f} select_truth_gain_lcb={mean_gain['lcb']:.4f} "
          f"ditto_fast_alarm={alarms['fast']['alarm'].replace(' ', '_')} "
          f"ditto_strong_alarm={alarms['strong']['alarm'].replace(' ', '_')} "
          f"strong_spearman_reward_truth={strong['reward']:.3f} "
          f"strong_spearman_judges_truth={strong['judges']:.3f} "
          f"strong_spearman_shared_judges_truth={strong['shared-encoder judges']:.3f} "
          f"strong_spearman_other_encoder_judges_truth={strong['other-encoder judges']:.3f} "
          f"strong_gain_error_reward={strong['error_reward']:.2f} strong_gain_error_judges={strong['error_judges']:.2f} "
          f"strong_gain_error_shared_judges={strong['error_shared-encoder judges']:.2f} "
          f"strong_gain_error_other_encoder_judges={strong['error_other-encoder judges']:.2f}")


def standardised_gains(out: Path, num_prompts: int, families: dict[str, list[str]]) -> dict[str, float]:
    """Each score's gain from iterate 0 to the kept iterate in units of its own spread within a prompt over the
    5 plain samples (iterate 0 and the 4 plain draws the alarm records; :func:`standardised_gain`), so that scores
    on different scales compare with the truth's: per prompt, and the mean absolute error against the truth's
    (``error_<score>``; lower tracks the truth better)."""
    rows = [json.loads((out / f"done/p{p:04d}.json").read_text()) for p in range(num_prompts)]
    z = {}
    for label, keys in {"truth": ["truth"], "reward": ["reward"], **families}.items():
        fields = [k if k in ("reward", "truth") else "judge_" + k for k in keys]
        plain = np.array([np.mean([[r[f"baseline_{f}"], *r["plain_draws"][f]] for f in fields], axis=0) for r in rows])
        z[label] = standardised_gain(plain[:, 0], [np.mean([r[f"optimised_{f}"] for f in fields]) for r in rows], plain)
    for p in range(num_prompts):
        print(f"    prompt {p}: kept-iterate gain in plain-sample standard deviations: "
              + ", ".join(f"{label} {z[label][p]:+.2f}" for label in z))
    errors = {f"error_{label}": float(np.abs(z[label] - z["truth"]).mean()) for label in z if label != "truth"}
    print("    mean |standardised gain - the truth's|: " + ", ".join(f"{k[6:]} {v:.2f}" for k, v in errors.items()))
    return errors


def iterate_tracking(log: Path, num_prompts: int, families: dict[str, list[str]]) -> dict[str, float]:
    """Per prompt, over its iterates: each score's gain (last iterate - iterate 0) and Spearman with the
    truth; printed per prompt, returned as the mean Spearman over prompts."""
    records = [json.loads(line) for line in log.read_text().splitlines()]
    spearmans: dict[str, list[float]] = {}
    for p in range(num_prompts):
        rows = sorted((r for r in records if r["prompt_index"] == p), key=lambda r: r["iteration"])
        truths = [r["truth"] for r in rows]
        series = {"reward": [r["reward"] for r in rows],
                  **{label: [np.mean([r["judge_" + n] for n in names]) for r in rows]
                     for label, names in families.items() if names}}
        cells = []
        for label, values in series.items():
            spearmans.setdefault(label, []).append(spearman(values, truths))
            cells.append(f"{label} {values[-1] - values[0]:+.3f} / {spearmans[label][-1]:+.3f}")
        print(f"    prompt {p}: last - first iterate gain / Spearman with truth over iterates: truth "
              f"{truths[-1] - truths[0]:+.3f}; " + "; ".join(cells))
    means = {label: float(np.mean(values)) for label, values in spearmans.items()}
    print("    mean over prompts, Spearman with truth: " + ", ".join(f"{k} {v:+.3f}" for k, v in means.items()))
    return means


if __name__ == "__main__":
    main()
