"""Report parts for held-out judges and the hacking alarm: the banner, and the optimised reward against the
judges' mean (Gao et al. 2022's proxy-vs-gold view; for best-of-N against its closed-form KL)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..recipes.alarm import ALARM_CALIBRATION
from .html import esc
from .svg import Series, line_chart


def best_of_n_kl(n: int) -> float:
    """KL divergence of best-of-N from the base distribution, ``log N - (N - 1) / N`` (Stiennon et al. 2020)."""
    return math.log(n) - (n - 1) / n


def alarm_banner(run_dir: Path) -> str:
    """The alarm of ``summary.json`` as a banner (empty when the run has none yet)."""
    path = Path(run_dir) / "summary.json"
    alarm = json.loads(path.read_text()).get("alarm") if path.is_file() else None
    if not alarm:
        return ""
    rates = f'<p class="note">{esc(ALARM_CALIBRATION)}</p>'
    if alarm["alarm"] == "ok":
        return f'<div class="alarm ok"><b>alarm: ok</b> — no hacking check fired (see summary.json){rates}</div>'
    reasons = "".join(f"<li>{esc(reason)}</li>" for reason in alarm["reasons"])
    return (f'<div class="alarm suspected"><b>alarm: hacking suspected</b><ul>{reasons}</ul>'
            "<p>The reward's gain is not confirmed by held-out judges, or the kept outputs carry an artefact more "
            f"often than plain samples: listen before trusting the reward's numbers.</p>{rates}</div>")


def best_of_n_judges_chart(curve: list[dict], extra_curves: dict[str, list[dict]]) -> str:
    """Reward, judges' mean (and truth) of the pick against the KL of best-of-N; ``""`` without judges."""
    judges = extra_curves.get("judges_mean")
    if not judges or not curve:
        return ""

    def series(label: str, points: list[dict]) -> Series:
        base = points[0]["mean"]  # gains over N = 1, so that heads of different offsets share the axis
        return Series(label, [best_of_n_kl(p["n"]) for p in points], [p["mean"] - base for p in points])

    lines = [series("reward (optimised)", curve), series("judges' mean (held out)", judges)]
    if extra_curves.get("truth"):
        lines.append(series("truth", extra_curves["truth"]))
    return line_chart(lines, "Gain of the pick over N = 1 vs KL(best-of-N) = log N - (N-1)/N",
                      "KL (nats)", "gain over N = 1")


def judge_keys(record: dict) -> list[str]:
    return sorted(key for key in record if key.startswith("judge_"))


def ditto_judges_chart(by_prompt: dict[int, list[dict]]) -> str:
    """Per prompt, the reward's and the judges' mean gain over iterate 0, per iteration."""
    lines = []
    for p, rows in sorted(by_prompt.items()):
        keys = judge_keys(rows[0]) if rows else []
        if not keys:
            continue
        judged = [sum(r[k] for k in keys) / len(keys) for r in rows]
        iterations = [r["iteration"] for r in rows]
        lines.append(Series(f"p{p} reward", iterations, [r["reward"] - rows[0]["reward"] for r in rows]))
        lines.append(Series(f"p{p} judges", iterations, [j - judged[0] for j in judged]))
    if not lines:
        return ""
    return line_chart(lines, "Reward vs held-out judges' mean: gain over iterate 0", "iteration", "gain")
