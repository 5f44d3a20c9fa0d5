"""A best-of-N run on disk: resumable, atomic, shardable across processes (``accelerate launch``).

Folder layout (written through :mod:`tunejury_align.rundir`)::

    run.json                 settings, prompts, model ids, versions, checkpoint hashes
    .progress/rank<R>.jsonl  append-only log of finished units (fsync'd), one per process
    winners/p<IIII>.wav      each prompt's best candidate so far (atomic replace)
    candidates/p<IIII>_c<CC>.wav   candidate 0 (the N=1 baseline) always, every candidate with save_all
    results.jsonl            every candidate, sorted by (prompt, candidate), written at the end
    curve.json               mean best reward vs N with bootstrap 95 % intervals

Rerunning the same command skips the finished units; a unit interrupted half-way is redone whole,
so the results equal an uninterrupted run's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..rundir import (
    atomic_write_audio,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    holds_run_lock,
    is_debug,
    load_unit_extras,
    load_unit_scores,
    log_unit,
    missing_units,
    prepare_run_dir,
    require_complete,
    score_matrix,
)
from .alarm_run import best_of_n_alarm, clip_probes
from .best_of_n import BestOfNConfig, Unit, best_of_n, summarize
from .compute import logged_compute, record_run_compute


def winner_path(prompt_index: int) -> str:
    return f"winners/p{prompt_index:04d}.wav"


def candidate_path(prompt_index: int, candidate: int) -> str:
    return f"candidates/p{prompt_index:04d}_c{candidate:02d}.wav"


@holds_run_lock
def run_best_of_n(
    generator,
    reward: Callable,
    prompts: list[str],
    config: BestOfNConfig,
    out: Path,
    meta: dict,
    *,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
    progress: Callable[[int], None] | None = None,
    scorers: dict[str, Callable] | None = None,
    reference: Path | None = None,
) -> dict | None:
    """Run (or resume) best-of-N into ``out``; this process takes prompts ``rank::world_size``.
    ``scorers`` add per-candidate scores beside the reward (e.g. ``{"truth": debug.truth}``, held-out judges);
    ``reference``: a folder of audio the distribution checks compare the winners with (default: candidate 0s).
    Returns the summary on rank 0 (after merging every process's log), ``None`` elsewhere."""
    out = Path(out)
    prepare_run_dir(out, meta, is_main=rank == 0)
    barrier()
    completed = load_unit_scores(out, len(prompts), config.n)
    best: dict[int, float] = {}
    for (p, _), score in completed.items():
        best[p] = max(best.get(p, -np.inf), score)

    def on_unit(unit: Unit, audio: torch.Tensor, scores: torch.Tensor, extras: dict) -> None:
        sample_rate = generator.sample_rate
        for c, clip in zip(unit.candidates, audio):
            if saves_all(config) or c == 0:  # candidate 0 (the N=1 baseline) always, for comparison
                atomic_write_audio(out / candidate_path(unit.prompt_index, c), clip, sample_rate)
        top = int(torch.argmax(scores))  # judges' picks (select) are known once a prompt is done: write_results
        if config.select == "reward" and float(scores[top]) > best.get(unit.prompt_index, -np.inf):  # earliest wins ties
            best[unit.prompt_index] = float(scores[top])
            atomic_write_audio(out / winner_path(unit.prompt_index), audio[top], sample_rate)
        log_unit(out, rank, unit.prompt_index, unit.candidates, unit.seeds, scores, extras,
                 compute=unit.compute.as_dict(), probes=clip_probes(audio, sample_rate))

    best_of_n(generator, reward, prompts, config=config, completed=completed, on_unit=on_unit,
              prompt_indices=range(rank, len(prompts), world_size), progress=progress, scorers=scorers,
              completed_extras=load_unit_extras(out))
    barrier()
    if rank != 0:
        return None
    return write_results(out, prompts, config, meta, reward=reward, reference=reference)


def saves_all(config: BestOfNConfig) -> bool:
    """Every candidate's audio is written with ``save_all``, and when judges choose the winner (``select``): it is
    known only once all the prompt's candidates are scored, possibly in another process or session."""
    return config.save_all or config.select != "reward"


def write_results(out: Path, prompts: list[str], config: BestOfNConfig, meta: dict, reward: Callable | None = None,
                  reference: Path | None = None) -> dict:
    """Merge the progress logs into results.jsonl and curve.json (atomically), once every candidate has its
    score (:class:`~tunejury_align.rundir.RunIncompleteError` otherwise); with ``reward``, also the hacking alarm
    (:mod:`.alarm`) into the summary and ``summary.json``."""
    scores = score_matrix(load_unit_scores(out, len(prompts), config.n), len(prompts), config.n)
    require_complete(out, missing_units(scores), scores.size, "candidate")
    extras = {name: score_matrix(values, len(prompts), config.n) for name, values in load_unit_extras(out).items()}
    result = summarize(scores, config, extras)
    models = {"generator": meta["generator"], "reward": meta["reward"], "versions": meta["versions"]}
    lines = []
    for p, prompt in enumerate(prompts):
        for c in range(config.n):
            if np.isnan(scores[p, c]):
                continue
            is_winner = result.winners[p] == c
            path = candidate_path(p, c) if saves_all(config) or c == 0 else (winner_path(p) if is_winner else None)
            if is_winner and config.select != "reward":
                atomic_write_bytes(out / winner_path(p), (out / candidate_path(p, c)).read_bytes())
            lines.append(json.dumps({
                "prompt_index": p, "prompt": prompt, "candidate": c, "seed": config.base_seed + c,
                "score": float(scores[p, c]), "winner": is_winner, "path": path, **models,
                **{name: float(values[p, c]) for name, values in extras.items()},
            }, sort_keys=True))
    atomic_write_text(out / "results.jsonl", "\n".join(lines) + "\n")
    summary = {"curve": result.curve, "prompts": len(prompts), "n": config.n, "debug": is_debug(meta),
               "select": config.select,
               "mean_winner_score": float(np.mean(result.winner_scores)) if lines else None}
    if result.extra_curves:
        summary["extra_curves"] = result.extra_curves  # each scorer's value at the reward's pick
    summary["compute"] = logged_compute(out).counts()  # the seconds go to run.json (they differ between reruns)
    atomic_write_json(out / "curve.json", summary)
    record_run_compute(out, logged_compute(out))
    if reward is not None:
        def paths(p: int, c: int) -> str:
            return winner_path(p) if c < 0 else candidate_path(p, c)

        summary = best_of_n_alarm(out, reward, prompts, scores, extras, result.winners, summary, paths, reference)
    return summary
