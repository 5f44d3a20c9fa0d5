"""A particle-steering run on disk: resumable per prompt, atomic, shardable across processes (``accelerate
launch``), as best-of-N's.

Folder layout (written through :mod:`tunejury_align.rundir`)::

    run.json                    settings, prompts, model ids, versions; its compute once finished
    .progress/rank<R>.jsonl     one line per finished prompt (fsync'd): final rewards, chosen particle,
                                trace (rewards, ESS and ancestors per scoring step), extra scores, compute
    chosen/p<IIII>.wav          each prompt's chosen sample
    particles/p<IIII>_k<KK>.wav every final particle, with save_all
    results.jsonl               one line per prompt, sorted, written at the end (no timings: reruns compare equal)
    summary.json                mean chosen reward (and truth) with bootstrap 95 % intervals, compute; with
                                judges, the alarm's judges' check of the final pick among the particles

Rerunning the same command skips finished prompts; a prompt interrupted half-way is redone whole, so the
results equal an uninterrupted run's.
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
    load_unit_scores,
    log_unit,
    prepare_run_dir,
    read_jsonl,
    require_complete,
)
from .alarm_run import selection_alarm
from .compute import logged_compute, record_run_compute
from .smc import SMCConfig, SteeredPrompt, smc


def chosen_path(prompt_index: int) -> str:
    return f"chosen/p{prompt_index:04d}.wav"


def particle_path(prompt_index: int, particle: int) -> str:
    return f"particles/p{prompt_index:04d}_k{particle:02d}.wav"


@holds_run_lock
def run_smc(generator, reward: Callable, prompts: list[str], config: SMCConfig, out: Path, meta: dict, *,
            rank: int = 0, world_size: int = 1, barrier: Callable[[], None] = lambda: None,
            progress: Callable[[int], None] | None = None, scorers: dict[str, Callable] | None = None,
            intermediate_reward: Callable | None = None) -> dict | None:
    """Run (or resume) particle steering into ``out``; this process takes prompts ``rank::world_size``.
    Returns the summary on rank 0 (after merging every process's log), ``None`` elsewhere."""
    out = Path(out)
    prepare_run_dir(out, meta, is_main=rank == 0)
    barrier()
    finished = {p for p, _ in load_unit_scores(out, len(prompts), config.particles)}
    shard = range(rank, len(prompts), world_size)
    if progress is not None:
        progress(len([p for p in shard if p in finished]))

    def on_prompt(result: SteeredPrompt) -> None:
        sample_rate, p = generator.sample_rate, result.prompt_index
        if config.save_all:
            for k, clip in enumerate(result.audio):
                atomic_write_audio(out / particle_path(p, k), clip, sample_rate)
        atomic_write_audio(out / chosen_path(p), result.chosen_audio, sample_rate)
        log_unit(out, rank, p, list(range(config.particles)), [config.base_seed + k for k in range(config.particles)],
                 result.rewards, result.extras, chosen=result.chosen, trace=result.trace,
                 compute=result.compute.as_dict())
        if progress is not None:
            progress(1)

    smc(generator, reward, prompts, config, intermediate_reward=intermediate_reward, scorers=scorers,
        prompt_indices=shard, skip=finished, on_prompt=on_prompt)
    barrier()
    if rank != 0:
        return None
    return write_results(out, prompts, config, meta)


def write_results(out: Path, prompts: list[str], config: SMCConfig, meta: dict) -> dict:
    """Merge the progress logs into results.jsonl and summary.json (atomically), once every prompt has its record
    (:class:`~tunejury_align.rundir.RunIncompleteError` otherwise)."""
    records = {}
    for log in sorted((out / ".progress").glob("rank*.jsonl")):
        for record in read_jsonl(log):
            records[record["prompt_index"]] = record
    require_complete(out, {p: [] for p in range(len(prompts)) if p not in records}, len(prompts), "prompt")
    models = {"generator": meta["generator"], "reward": meta["reward"], "versions": meta["versions"]}
    lines, chosen, extras = [], [], {}
    for p, prompt in enumerate(prompts):
        record = records[p]
        chosen.append(record["scores"][record["chosen"]])
        for name, values in (record.get("extras") or {}).items():
            extras.setdefault(name, []).append(values[record["chosen"]])
        lines.append(json.dumps({
            "prompt_index": p, "prompt": prompt, "seeds": record["seeds"], "rewards": record["scores"],
            "chosen": record["chosen"], "chosen_reward": chosen[-1], "path": chosen_path(p), "trace": record["trace"],
            "particle_paths": [particle_path(p, k) for k in range(config.particles)] if config.save_all else None,
            **{name: values for name, values in (record.get("extras") or {}).items()}, **models,
        }, sort_keys=True))
    atomic_write_text(out / "results.jsonl", "\n".join(lines) + "\n")
    compute = logged_compute(out)
    summary = {"prompts": len(prompts), "particles": config.particles, "debug": is_debug(meta),
               "mean_chosen_reward": mean_interval(chosen),
               "extras": {name: mean_interval(values) for name, values in extras.items()},
               "compute": compute.as_dict()}
    atomic_write_json(out / "summary.json", summary)
    record_run_compute(out, compute)
    rows = [records[p] for p in range(len(prompts))]
    return selection_alarm(out, rows, [r["chosen"] for r in rows], summary)
