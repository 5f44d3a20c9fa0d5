"""Report section of particle steering (``align smc``): each prompt's reward vs sampler step per particle slot
(the ancestry's resampling steps marked), the chosen sample, and the compute."""

from __future__ import annotations

from pathlib import Path

from ..rundir import read_jsonl
from .html import audio_player, esc
from .svg import Series, line_chart


def smc_section(run_dir: Path, run: dict) -> str:
    from ..recipes.smc_run import chosen_path

    prompts, config = run["prompts"], run["config"]
    records = {r["prompt_index"]: r for log in sorted((run_dir / ".progress").glob("rank*.jsonl"))
               for r in read_jsonl(log)}
    status = "finished" if (run_dir / "results.jsonl").is_file() else "in progress"
    parts = [f"<p>{len(records)} of {len(prompts)} prompts steered ({status}); K = {config['particles']} particles, "
             f"potential {esc(config['potential'])}, lambda {config['temperature']:g}, scored every "
             f"{config['resample_every']} step(s), ESS threshold {config['ess_threshold']:g}.</p>"]
    compute = run.get("compute")
    if compute:
        parts.append(f"<p>Compute: {compute['generator_passes']} {esc(compute['pass_unit'])}, "
                     f"{compute['reward_calls']} reward calls, generator {compute['generator_seconds']:.1f} s, "
                     f"reward {compute['encoder_seconds']:.1f} s.</p>")
    rows = ["<tr><th>#</th><th>prompt</th><th>reward vs step, per particle slot</th><th>chosen</th></tr>"]
    for p, prompt in enumerate(prompts):
        record = records.get(p)
        if record is None:
            rows.append(f'<tr><td>{p}</td><td>{esc(prompt)}</td><td class="missing">not run yet</td><td></td></tr>')
            continue
        rows.append(f"<tr><td>{p}</td><td>{esc(prompt)}</td><td>{particle_chart(record)}</td>"
                    f'<td><span class="score">{record["scores"][record["chosen"]]:.4f}</span> (particle '
                    f'{record["chosen"]}){audio_player(run_dir, chosen_path(p))}</td></tr>')
    parts.append("<h2>Prompts: reward of each particle's x0 prediction vs step</h2><table>" + "".join(rows)
                 + "</table><p>A slot's line jumps where resampling replaced its particle (steps listed under "
                   "each chart); the last point is the final reward.</p>")
    return "<h2>Particle steering (FK / SMC)</h2>" + "".join(parts)


def particle_chart(record: dict) -> str:
    trace, finals = record["trace"], record["scores"]
    last = (trace[-1]["step"] + 1) if trace else 0
    series = [Series(f"slot {k}", [r["step"] for r in trace] + [last], [r["rewards"][k] for r in trace] + [finals[k]])
              for k in range(len(finals))]
    resampled = [r["step"] for r in trace if "ancestors" in r and r["ancestors"] != list(range(len(finals)))]
    note = f"<br>resampled after steps {resampled}" if resampled else "<br>no particle replaced"
    return line_chart(series, "reward vs step", "sampler step", "reward", width=420, height=220) + note


def pruned_section(run_dir: Path, run: dict) -> str:
    """Pruned best-of-N (``align best-of-n --prune``): per prompt, each stage's prefix scores and the survivors'
    final scores, the winner, and the compute against the unpruned run's."""
    from ..recipes.best_of_n_run import winner_path

    prompts, config = run["prompts"], run["config"]
    records = {r["prompt_index"]: r for log in sorted((run_dir / ".progress").glob("rank*.jsonl"))
               for r in read_jsonl(log)}
    status = "finished" if (run_dir / "results.jsonl").is_file() else "in progress"
    parts = [f"<p>{len(records)} of {len(prompts)} prompts done ({status}); N = {config['n']}, prune points "
             f"{config['prune_at']} of the clip, keeping {config['prune_keep']:g} of the streams each time.</p>"]
    passes, full = sum(r["compute"]["generator_passes"] for r in records.values()), sum(
        r["full_passes"] for r in records.values())
    if full:
        parts.append(f"<p>Decoder tokens: {passes} = {passes / full:.2f} x the unpruned run's {full}.</p>")
    rows = ["<tr><th>#</th><th>prompt</th><th>prefix scores per stage (kept in bold)</th><th>winner</th></tr>"]
    for p, prompt in enumerate(prompts):
        record = records.get(p)
        if record is None:
            rows.append(f'<tr><td>{p}</td><td>{esc(prompt)}</td><td class="missing">not run yet</td><td></td></tr>')
            continue
        stages = []
        for stage, after in zip(record["stages"], record["stages"][1:] + [{"candidates": record["candidates"]}]):
            cells = [f"<b>{c}: {s:.3f}</b>" if c in after["candidates"] else f"{c}: {s:.3f}"
                     for c, s in zip(stage["candidates"], stage["scores"])]
            stages.append(f"{stage['seconds']:.2f} s: " + ", ".join(cells))
        final = dict(zip(record["candidates"], record["scores"]))
        rows.append(f"<tr><td>{p}</td><td>{esc(prompt)}</td><td>{'<br>'.join(stages)}</td><td>candidate "
                    f"{record['winner']}: <span class=\"score\">{final[record['winner']]:.4f}</span>"
                    f"{audio_player(run_dir, winner_path(p))}</td></tr>")
    parts.append("<h2>Prompts</h2><table>" + "".join(rows) + "</table>")
    return "<h2>Early-pruned best-of-N</h2>" + "".join(parts)
