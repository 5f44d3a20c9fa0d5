"""An early-pruned best-of-N run on disk (``align best-of-n --prune``): resumable per prompt, atomic,
shardable across processes, as best-of-N's.

Folder layout: ``run.json``; ``.progress/rank<R>.jsonl`` (one line per finished prompt: the survivors' final
scores, every stage's prefix scores, extra scores, the compute and what the unpruned run would have spent);
``winners/p<IIII>.wav``; ``results.jsonl`` (one line per candidate: its final score or the prune point that
stopped it, its prefix scores; no timings, so reruns compare equal); ``summary.json`` (mean winner score with
a bootstrap 95 % interval, the compute, and the compute ratio to the unpruned run; with judges, the alarm's
judges' check of the final pick among the survivors: :func:`~.alarm_run.selection_alarm`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..reward.metrics import mean_interval
from ..rundir import (
    atomic_write_audio,
    atomic_write_json,
    atomic_write_text,
    holds_run_lock,
    is_debug,
    log_unit,
    prepare_run_dir,
    read_jsonl,
    require_complete,
)
from .alarm_run import selection_alarm
from .best_of_n import BestOfNConfig
from .best_of_n_prune import PrunedPrompt, pruned_best_of_n
from .best_of_n_run import winner_path
from .compute import logged_compute, record_run_compute


def prompt_records(out: Path) -> dict[int, dict]:
    return {r["prompt_index"]: r for log in sorted((Path(out) / ".progress").glob("rank*.jsonl")) for r in read_jsonl(log)}


@holds_run_lock
def run_pruned_best_of_n(generator, reward: Callable, prompts: list[str], config: BestOfNConfig, out: Path,
                         meta: dict, *, rank: int = 0, world_size: int = 1, barrier: Callable[[], None] = lambda: None,
                         progress: Callable[[int], None] | None = None, scorers: dict[str, Callable] | None = None
                         ) -> dict | None:
    """Run (or resume) pruned best-of-N into ``out``; this process takes prompts ``rank::world_size``.
    Returns the summary on rank 0, ``None`` elsewhere."""
    out = Path(out)
    prepare_run_dir(out, meta, is_main=rank == 0)
    barrier()
    finished = set(prompt_records(out))

    def on_prompt(result: PrunedPrompt) -> None:
        atomic_write_audio(out / winner_path(result.prompt_index), result.winner_audio, generator.sample_rate)
        alive = sorted(result.survivor_audio)
        log_unit(out, rank, result.prompt_index, alive, [config.base_seed + c for c in alive],
                 result.scores[alive], {name: values[alive] for name, values in result.extras.items()},
                 winner=result.winner, stages=result.stages, compute=result.compute.as_dict(),
                 full_passes=result.full_passes)
        if progress is not None:
            progress(1)

    pruned_best_of_n(generator, reward, prompts, config, scorers=scorers,
                     prompt_indices=range(rank, len(prompts), world_size), skip=finished, on_prompt=on_prompt)
    barrier()
    return write_pruned_results(out, prompts, config, meta) if rank == 0 else None


def write_pruned_results(out: Path, prompts: list[str], config: BestOfNConfig, meta: dict) -> dict:
    records = prompt_records(out)
    require_complete(out, {p: [] for p in range(len(prompts)) if p not in records}, len(prompts), "prompt")
    lines, winners, extras, full = [], [], {}, 0
    for p, prompt in enumerate(prompts):
        record = records[p]
        final = dict(zip(record["candidates"], record["scores"]))
        winners.append(final[record["winner"]])
        for name, values in (record.get("extras") or {}).items():
            extras.setdefault(name, []).append(dict(zip(record["candidates"], values))[record["winner"]])
        full += record["full_passes"]
        for c in range(config.n):
            prefix = [stage["scores"][stage["candidates"].index(c)] if c in stage["candidates"] else None
                      for stage in record["stages"]]
            stopped = None if c in final else max(s["seconds"] for s in record["stages"] if c in s["candidates"])
            lines.append(json.dumps({"prompt_index": p, "prompt": prompt, "candidate": c, "seed": config.base_seed + c,
                                     "score": final.get(c), "prefix_scores": prefix, "pruned_at_seconds": stopped,
                                     "winner": c == record["winner"],
                                     "path": winner_path(p) if c == record["winner"] else None,
                                     **{name: dict(zip(record["candidates"], values)).get(c)
                                        for name, values in (record.get("extras") or {}).items()}}, sort_keys=True))
    atomic_write_text(out / "results.jsonl", "\n".join(lines) + "\n")
    compute = logged_compute(out)
    summary = {"prompts": len(prompts), "n": config.n, "pruned": True, "debug": is_debug(meta),
               "mean_winner_score": mean_interval(winners),
               "extras": {name: mean_interval(values) for name, values in extras.items()},
               "compute": compute.as_dict(), "unpruned_passes": full,
               "compute_ratio": compute.generator_passes / full}
    atomic_write_json(out / "summary.json", summary)
    record_run_compute(out, compute)
    rows = [records[p] for p in range(len(prompts))]
    return selection_alarm(out, rows, [r["candidates"].index(r["winner"]) for r in rows], summary)
