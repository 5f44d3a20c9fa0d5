"""Per-recipe report sections: each takes (run_dir, run.json dict) and returns HTML."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..rundir import read_jsonl
from .html import audio_player, esc
from .judges import best_of_n_judges_chart, ditto_judges_chart
from .steering import pruned_section, smc_section
from .svg import Series, line_chart


def best_of_n_section(run_dir: Path, run: dict) -> str:
    from ..recipes.best_of_n import BestOfNConfig, summarize
    from ..recipes.best_of_n_run import candidate_path, winner_path
    from ..rundir import load_unit_extras, load_unit_scores, score_matrix

    config = BestOfNConfig(**run["config"])
    if config.prune:
        return pruned_section(run_dir, run)
    prompts = run["prompts"]
    scores = score_matrix(load_unit_scores(run_dir, len(prompts), config.n), len(prompts), config.n)
    extras = {name: score_matrix(values, len(prompts), config.n) for name, values in load_unit_extras(run_dir).items()}
    summary = summarize(scores, config, extras)
    done = int((~np.isnan(scores)).sum())
    status = "finished" if (run_dir / "results.jsonl").is_file() else "in progress"
    parts = [f"<p>{done} of {scores.size} candidates scored ({status}); {len(prompts)} prompts, N = {config.n}.</p>"]
    curve = summary.curve
    if curve:
        charts = [line_chart([band_series("mean best reward", curve)], "Mean best reward vs N (95 % bootstrap band)",
                             "N (expected best of N drawn)", "reward", log2_x=True)]
        for name, extra in summary.extra_curves.items():  # e.g. the debug world's truth of the reward's pick
            if extra:
                charts.append(line_chart([band_series(f"{name} of the reward's pick", extra)],
                                         f"{extra_title(name)} of the reward's pick vs N (95 % band)",
                                         "N (expected best of N drawn)", name, log2_x=True))
        charts.append(best_of_n_judges_chart(curve, summary.extra_curves))
        parts.append('<div class="charts">' + "".join(charts) + "</div>")
    else:
        parts.append('<p class="missing">The curve appears once a prompt has all its candidates.</p>')
    rows = ["<tr><th>#</th><th>prompt</th><th>N=1 (candidate 0)</th><th>best of N</th><th>candidates</th></tr>"]
    for p, prompt in enumerate(prompts):
        row = scores[p]
        have = ~np.isnan(row)
        first = f'<span class="score">{row[0]:.4f}</span>' if have[0] else "–"
        if have.any():
            best = int(np.nanargmax(row))
            best_text = f'<span class="score">{row[best]:.4f}</span> (candidate {best}, seed {config.base_seed + best})'
        else:
            best_text = "–"
        rows.append(f"<tr><td>{p}</td><td>{esc(prompt)}</td>"
                    f"<td>{first}{audio_player(run_dir, candidate_path(p, 0))}</td>"
                    f"<td>{best_text}{audio_player(run_dir, winner_path(p))}</td><td>{int(have.sum())}/{config.n}</td></tr>")
    parts.append("<h2>Prompts: N=1 vs winner</h2><table>" + "".join(rows) + "</table>")
    return "<h2>Best-of-N</h2>" + "".join(parts)


def band_series(label: str, curve: list[dict]) -> Series:
    return Series(label, [p["n"] for p in curve], [p["mean"] for p in curve],
                  [p.get("low", p["mean"]) for p in curve], [p.get("high", p["mean"]) for p in curve])


def extra_title(name: str) -> str:
    return "The debug world's truth" if name == "truth" else name.capitalize()


def _jsonl(path: Path) -> list[dict]:
    return read_jsonl(path)


def generic_section(run_dir: Path, run: dict) -> str:
    """Fallback: list the run's JSONL logs and audio files."""
    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())
    audio = [f for f in files if f.endswith(".wav")]
    players = "".join(audio_player(run_dir, f, f) for f in audio[:50])
    return f"<h2>Files</h2><pre>{esc(json.dumps(files, indent=1))}</pre>{players}"


def ditto_section(run_dir: Path, run: dict) -> str:
    from ..recipes.ditto_run import LOG, LOG_FIELDS, audio_path, done_path

    prompts = run["prompts"]
    records = read_jsonl(run_dir / LOG, LOG_FIELDS, {"prompt_index": len(prompts)})
    by_prompt: dict[int, list[dict]] = {}
    for record in records:
        by_prompt.setdefault(record["prompt_index"], []).append(record)
    finished = sum((run_dir / done_path(p)).is_file() for p in range(len(prompts)))
    parts = [f"<p>{finished} of {len(prompts)} prompts finished; {len(records)} iterates logged.</p>"]

    def traces(key: str) -> list[Series]:
        return [Series(f"p{p}", [r["iteration"] for r in rows], [r[key] for r in rows])
                for p, rows in sorted(by_prompt.items())]

    extra_names = sorted({key for rows in by_prompt.values() for r in rows for key in r} & {"truth"})
    parts.append('<div class="charts">'
                 + line_chart(traces("reward"), "Reward per iteration", "iteration", "reward")
                 + "".join(line_chart(traces(name), f"{extra_title(name)} per iteration (not optimised)", "iteration",
                                      name) for name in extra_names)
                 + ditto_judges_chart(by_prompt)
                 + line_chart(traces("noise_norm"), "Initial-noise norm / sqrt(dim)", "iteration", "norm")
                 + "</div>")
    rows = ["<tr><th>#</th><th>prompt</th><th>baseline (iteration 0)</th><th>optimised (best iterate)</th>"
            "<th>s / iteration</th><th>peak memory</th></tr>"]
    for p, prompt in enumerate(prompts):
        done = run_dir / done_path(p)
        info = json.loads(done.read_text()) if done.is_file() else {}
        base = info.get("baseline_reward")
        best = info.get("optimised_reward")
        log = by_prompt.get(p, [])
        seconds = np.mean([r["seconds"] for r in log]) if log else None
        memory = max((r.get("peak_memory") or 0) for r in log) if log else None
        rows.append(
            f"<tr><td>{p}</td><td>{esc(prompt)}</td>"
            f"<td>{'' if base is None else f'<span class=score>{base:.4f}</span>'}"
            f"{audio_player(run_dir, audio_path('baseline', p))}</td>"
            f"<td>{'' if best is None else f'<span class=score>{best:.4f}</span>'}"
            f"{audio_player(run_dir, audio_path('optimised', p))}</td>"
            f"<td>{'' if seconds is None else f'{seconds:.2f}'}</td>"
            f"<td>{'' if not memory else f'{memory / 2**20:.0f} MiB'}</td></tr>")
    parts.append("<h2>Prompts: baseline vs optimised</h2><table>" + "".join(rows) + "</table>")
    return "<h2>DITTO</h2>" + "".join(parts)


def expert_iter_section(run_dir: Path, run: dict) -> str:
    from ..recipes.expert_iter_run import METRICS_FIELDS

    metrics = sorted(read_jsonl(run_dir / "metrics.jsonl", METRICS_FIELDS, {"round": None}), key=lambda m: m["round"])
    rounds = [m["round"] for m in metrics]
    prompts = run["prompts"]
    eval_prompts = prompts.get("heldout") or prompts.get("train") or []
    parts = [f"<p>{len(metrics)} round(s) evaluated (round 0 = the starting model); "
             f"{len(prompts.get('train', []))} training prompt(s), evaluation on "
             f"{'held-out' if prompts.get('heldout') else 'training'} prompts.</p>"]

    def series(key: str, label: str) -> Series:
        pairs = [(m["round"], m[key]) for m in metrics if m.get(key) is not None]
        return Series(label, [r for r, _ in pairs], [v for _, v in pairs])

    reward = series("eval_reward_mean", "eval reward")
    if metrics:
        reward.low = [m["eval_reward_mean"] - m.get("eval_reward_std", 0) for m in metrics]
        reward.high = [m["eval_reward_mean"] + m.get("eval_reward_std", 0) for m in metrics]
    truth = series("eval_truth_mean", "eval truth")
    judged = series("eval_judges_mean", "held-out judges' mean")
    parts.append('<div class="charts">'
                 + line_chart([reward], "Reward of fresh samples (mean ± std)", "round", "reward")
                 + (line_chart([truth], "The debug world's truth of fresh held-out samples", "round", "truth")
                    if truth.x else "")
                 + (line_chart([series("eval_reward_mean", "reward (optimised)"), judged],
                               "Reward vs held-out judges' mean of fresh samples", "round", "score") if judged.x else "")
                 + line_chart([series("kept_fraction", "kept fraction")], "Kept fraction", "round", "fraction")
                 + line_chart([series("frechet_clap_audio", "CLAP audio"), series("frechet_mert", "MERT")],
                              "Fidelity: Frechet distance to round 0", "round", "distance")
                 + line_chart([series("diversity", "diversity")], "Diversity (mean pairwise cosine distance)",
                              "round", "distance")
                 + "</div>")
    last = max(rounds) if rounds else None
    rows = ["<tr><th>#</th><th>prompt</th><th>round 0</th><th>last round</th></tr>"]
    for p, prompt in enumerate(eval_prompts):
        name = f"p{p:04d}_c000.wav"
        last_cell = audio_player(run_dir, f"round_{last}/eval/audio/{name}", f"round {last}") if last else \
            '<span class="missing">no round yet</span>'
        rows.append(f"<tr><td>{p}</td><td>{esc(prompt)}</td>"
                    f"<td>{audio_player(run_dir, f'round_0/eval/audio/{name}', 'round 0')}</td><td>{last_cell}</td></tr>")
    parts.append("<h2>Same prompts and seeds: round 0 vs last round</h2><table>" + "".join(rows) + "</table>")
    table = ["<tr><th>round</th><th>eval reward</th><th>kept</th><th>threshold</th><th>Frechet CLAP / MERT</th>"
             "<th>diversity</th><th>train loss first → last</th></tr>"]
    for m in metrics:
        def fmt(value, spec=".4g"):
            return "–" if value is None else format(value, spec)
        table.append(f"<tr><td>{m['round']}</td><td>{fmt(m.get('eval_reward_mean'))}</td>"
                     f"<td>{fmt(m.get('kept_fraction'), '.0%')}</td><td>{fmt(m.get('threshold'))}</td>"
                     f"<td>{fmt(m.get('frechet_clap_audio'))} / {fmt(m.get('frechet_mert'))}</td>"
                     f"<td>{fmt(m.get('diversity'))}</td>"
                     f"<td>{fmt(m.get('train_loss_first'))} → {fmt(m.get('train_loss_last'))}</td></tr>")
    parts.append("<h2>Per-round metrics</h2><table>" + "".join(table) + "</table>")
    return "<h2>Expert iteration</h2>" + "".join(parts)


SECTIONS = {
    "best-of-n": best_of_n_section,
    "ditto": ditto_section,
    "expert-iter": expert_iter_section,
    "smc": smc_section,
}
