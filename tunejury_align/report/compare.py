"""``align compare RUN_DIR...``: mean reward (and the debug world's truth) against compute for several runs on
the same prompts, as one self-contained HTML page and a JSON file.

Per run and prompt the value is the run's pick: best-of-N's (or pruned best-of-N's) winner, particle
steering's chosen sample, DITTO's optimised audio, expert iteration's fresh samples of the last round's weights
(their mean per held-out prompt; the prompts compared are the held-out ones, or the training prompts when none
were held out). Means over prompts carry percentile bootstrap 95 % intervals; compute is the run's record
(``run.json``'s ``compute``: generator forward passes, reward calls, seconds; for expert iteration also its
fine-tuning steps, examples and seconds, shown beside the forward passes).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..debug.worlds import recorded_truth
from ..reward.metrics import mean_interval
from ..rundir import atomic_write_json, atomic_write_text, is_debug
from .html import STYLE, ReportError, esc
from .svg import Series, line_chart


def compared_prompts(run: dict) -> list[str]:
    """The prompts a run's picks are on (expert iteration: its held-out prompts, else its training prompts)."""
    prompts = run["prompts"]
    return (prompts["heldout"] or prompts["train"]) if isinstance(prompts, dict) else prompts


def expert_rounds(run: dict) -> int:
    return int((run.get("io_settings") or {}).get("rounds", run["config"].get("rounds", 0)))


def ditto_picks(run_dir: Path) -> dict[str, list[float]]:
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    if not summary or summary["finished"] != summary["prompts"]:
        raise ReportError(f"{run_dir}: DITTO run not finished (summary.json); finish the run first")
    rows = summary["per_prompt"]
    values = {"reward": [r["optimised_reward"] for r in rows]}
    if all("optimised_truth" in r for r in rows) and rows:
        values["truth"] = [r["optimised_truth"] for r in rows]
    return values


def expert_iter_picks(run_dir: Path, run: dict) -> dict[str, list[float]]:
    import numpy as np

    from ..rundir import load_unit_extras, load_unit_scores, score_matrix

    rounds, prompts = expert_rounds(run), compared_prompts(run)
    folder = run_dir / f"round_{rounds}"
    if not (folder / "metrics.json").is_file():
        raise ReportError(f"{run_dir}: expert iteration not finished (no round_{rounds}/metrics.json); finish it first")
    per_prompt = run["config"]["eval_samples_per_prompt"]
    matrices = {"reward": score_matrix(load_unit_scores(folder / "eval", len(prompts), per_prompt), len(prompts),
                                       per_prompt)}
    if "truth" in (extras := load_unit_extras(folder / "eval")):
        matrices["truth"] = score_matrix(extras["truth"], len(prompts), per_prompt)
    return {name: [float(v) for v in np.nanmean(m, axis=1)] for name, m in matrices.items()}


def picks(run_dir: Path, run: dict) -> dict[str, list[float]]:
    """``{"reward": [per prompt], "truth": [...]}`` of a finished run's picks."""
    if run.get("command") == "ditto":
        return ditto_picks(run_dir)
    if run.get("command") == "expert-iter":
        return expert_iter_picks(run_dir, run)
    path = run_dir / "results.jsonl"
    if not path.is_file():
        raise ReportError(f"{run_dir}: not finished (no results.jsonl); finish the run first")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    values: dict[str, list[float]] = {"reward": []}
    command = run.get("command")
    if command == "best-of-n":
        for row in rows:
            if row["winner"]:
                values["reward"].append(row["score"])
                if row.get("truth") is not None:
                    values.setdefault("truth", []).append(row["truth"])
    elif command == "smc":
        for row in rows:
            values["reward"].append(row["chosen_reward"])
            if "truth" in row:
                values.setdefault("truth", []).append(row["truth"][row["chosen"]])
    else:
        raise ReportError(f"{run_dir}: `align compare` reads best-of-n (pruned or not), smc, ditto and expert-iter "
                          f"runs, not {command!r}")
    return values


def label_of(run: dict, run_dir: Path) -> str:
    config = run.get("config", {})
    if run.get("command") == "smc":
        return f"smc K={config.get('particles')} ({run_dir.name})"
    if run.get("command") == "ditto":
        return f"DITTO {config.get('iterations')} iterations ({run_dir.name})"
    if run.get("command") == "expert-iter":
        return f"expert iteration {expert_rounds(run)} rounds ({run_dir.name})"
    kind = "pruned best-of-N" if config.get("prune") else "best-of-N"
    return f"{kind} N={config.get('n')} ({run_dir.name})"


def compare(run_dirs: list[str | Path], out: str | Path) -> dict:
    """Write ``out.html`` and ``out.json`` (``out`` without suffix, or a folder: ``compare.html`` in it) and return
    the JSON content. The runs must share their prompts."""
    runs = []
    for run_dir in map(Path, run_dirs):
        meta_path = run_dir / "run.json"
        if not meta_path.is_file():
            raise ReportError(f"{run_dir} is not a run folder (no run.json)")
        run = json.loads(meta_path.read_text())
        runs.append((run_dir, run))
    prompts = compared_prompts(runs[0][1])
    for run_dir, run in runs[1:]:
        if compared_prompts(run) != prompts:
            raise ReportError(f"{run_dir} ran other prompts than {runs[0][0]}: compare runs on the same prompts")
    entries = []
    for run_dir, run in runs:
        values = picks(run_dir, run)
        entries.append({"run": str(run_dir), "label": label_of(run, run_dir), "command": run["command"],
                        "debug": is_debug(run), "truth_name": recorded_truth(run), "compute": run.get("compute"),
                        **{name: mean_interval(v) for name, v in values.items()}})
    truths = sorted({e["truth_name"] for e in entries if "truth" in e})
    if len(truths) > 1:
        raise ReportError(f"the runs record different debug-world truths ({'; '.join(truths)}): their truth values "
                          "do not compare; compare runs of one world")
    result = {"prompts": len(prompts), "truth": truths[0] if truths else None, "runs": entries}
    out = Path(out)
    base = out / "compare" if out.is_dir() else out.with_suffix("")
    atomic_write_json(base.with_suffix(".json"), result)
    atomic_write_text(base.with_suffix(".html"), page(result))
    return result


def cell(m: dict | None) -> str:
    return f"{m['mean']:.4f} [{m['low']:.4f}, {m['high']:.4f}]" if m else "–"


def training(compute: dict) -> str:
    if not compute.get("train_steps"):
        return "–"
    return f"{compute['train_steps']} steps, {compute['train_examples']} examples, {compute['train_seconds']:.1f} s"


def page(result: dict) -> str:
    charts = []
    for name in ("reward", "truth"):
        # each run: a vertical bar from the interval's low to its high end, through the mean
        series = [Series(e["label"], [e["compute"]["generator_passes"]] * 3,
                         [e[name]["low"], e[name]["mean"], e[name]["high"]]) for e in result["runs"]
                  if name in e and e.get("compute")]
        if series:
            charts.append(line_chart(series, f"mean {name} of the pick vs generator forward passes (bars: 95 %)",
                                     "generator forward passes (NFE or tokens)", name))
    rows = ["<tr><th>run</th><th>reward (95 %)</th><th>truth (95 %)</th><th>forward passes</th><th>reward calls</th>"
            "<th>generator s</th><th>reward s</th><th>training</th></tr>"]
    for e in result["runs"]:
        c = e.get("compute") or {}
        rows.append(f"<tr><td>{esc(e['label'])}</td><td>{cell(e.get('reward'))}</td><td>{cell(e.get('truth'))}</td>"
                    f"<td>{c.get('generator_passes', '–')} {esc(c.get('pass_unit', ''))}</td>"
                    f"<td>{c.get('reward_calls', '–')}</td><td>{c.get('generator_seconds', 0):.1f}</td>"
                    f"<td>{c.get('encoder_seconds', 0):.1f}</td><td>{training(c)}</td></tr>")
    debug = ('<p class="debug">Debug world: the reward is a learned proxy of a known truth '
             f"(<code>{esc(result.get('truth') or '')}</code>).</p>") if any(e["debug"] for e in result["runs"]) else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>align compare</title>'
            f"<style>{STYLE}</style></head><body><h1>Reward against compute, {result['prompts']} prompts</h1>{debug}"
            f'<div class="charts">{"".join(charts)}</div><table>{"".join(rows)}</table></body></html>\n')
