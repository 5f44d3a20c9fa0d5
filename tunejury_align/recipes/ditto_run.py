"""A DITTO run on disk: one prompt after another, resumable per prompt, atomic writes.

Folder layout::

    run.json               settings, prompts, model ids, versions, checkpoint hashes (a resume must match
                           them all but the memory-only ``checkpoint_steps`` / ``checkpoint_reward``,
                           which each done marker records for its prompt)
    ditto.jsonl            one record per prompt per iterate (prompt_index, iteration, reward, loss,
                           noise_norm, seconds, peak_memory, start_memory, backward), appended live
    baseline/p<IIII>.wav   iterate 0: what the generator gives for the seed
    optimised/p<IIII>.wav  the best iterate
    noise/p<IIII>.pt       the best iterate's initial noise, (1, *latent) float32 (torch.save)
    draws/p<IIII>.pt       with judges: the reward's embeddings of 4 plain draws (other seeds), for the alarm
    done/p<IIII>.json      the prompt's summary (with judges: the plain draws' scores); written last, it marks
                           the prompt finished
    summary.json           all finished prompts: rewards before / after, mean gain

Rerunning the same command skips the finished prompts. A prompt interrupted half-way is redone from
its start (its partial records are first dropped from ``ditto.jsonl``): every prompt is a pure
function of (prompt, settings, models), so the results equal an uninterrupted run's (timings aside).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from ..generators import as_diffusion_generator
from ..reward.judges import judge_names
from ..rundir import (
    append_jsonl,
    atomic_write_audio,
    atomic_write_json,
    holds_run_lock,
    is_debug,
    prepare_run_dir,
    read_jsonl,
    require_complete,
    rewrite_jsonl,
    run_meta,
    save_tensor,
)
from .alarm_run import clip_probes, ditto_alarm
from .best_of_n import reward_texts
from .compute import Compute, record_run_compute, total
from .ditto import MEMORY_SETTINGS, DittoConfig, DittoResult, IterationRecord, ditto

logger = logging.getLogger(__name__)

LOG = "ditto.jsonl"
#: what each ``ditto.jsonl`` record must hold (:func:`~tunejury_align.rundir.read_jsonl`)
LOG_FIELDS = {"prompt_index": "int", "iteration": "int", "reward": "number", "noise_norm": "number",
              "seconds": "number", "peak_memory": "number?"}
__all__ = ["LOG", "LOG_FIELDS", "done_path", "ditto_run_meta", "run_ditto"]


def done_path(prompt_index: int) -> str:
    return f"done/p{prompt_index:04d}.json"


def audio_path(kind: str, prompt_index: int) -> str:
    return f"{kind}/p{prompt_index:04d}.wav"


def draws_path(prompt_index: int) -> str:
    return f"draws/p{prompt_index:04d}.pt"


def noise_path(prompt_index: int) -> str:
    return f"noise/p{prompt_index:04d}.pt"


def finished_prompts(out: Path, num_prompts: int) -> set[int]:
    return {p for p in range(num_prompts) if (out / done_path(p)).is_file()}


def drop_unfinished_records(out: Path, finished: set[int]) -> None:
    """Rewrite ``ditto.jsonl`` (atomically) without the records of unfinished prompts or a torn line."""
    log = out / LOG
    if not log.is_file():
        return
    records = read_jsonl(log, LOG_FIELDS)
    keep = [r for r in records if r.get("prompt_index") in finished]
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    if len(keep) != len(lines):
        logger.info("dropping %d record(s) of unfinished prompts from %s", len(lines) - len(keep), log)
        rewrite_jsonl(log, keep)


#: unoptimised draws per prompt (other seeds) scored beside iterate 0 when judges are recorded: the hacking alarm
#: measures how much of a reward difference the judges see on samples nobody optimised (``alarm.py``)
ALARM_DRAWS = 4


def baseline_draws(generator, reward: Callable, prompt: str, config: DittoConfig, scorers: dict) -> dict | None:
    """``{"seeds", "reward", <scorer>: [...]}`` of :data:`ALARM_DRAWS` plain samples (seeds after ``config.seed``,
    the generation options of iterate 0) when ``scorers`` hold judges; their compute under ``"compute"``."""
    if not judge_names(scorers or {}):
        return None
    seeds = [config.seed + 1 + k for k in range(ALARM_DRAWS)]
    compute = Compute(pass_unit="nfe", reward_calls=len(seeds),
                      generator_passes=int(config.sampler_steps) * len(seeds))
    text = reward_texts(prompt, config)
    with compute.timing("generator"):
        audio = generator.generate([config.prompt_prefix + prompt] * len(seeds), seeds, **config.generation_options())
    with torch.inference_mode():
        with compute.timing("encoder"):
            draws = {"seeds": seeds, "reward": reward(audio, generator.sample_rate, [text] * len(seeds)).float().tolist(),
                     "probes": clip_probes(audio, generator.sample_rate)}  # the exploit check's plain samples
        draws.update({name: fn(audio, generator.sample_rate, [prompt] * len(seeds)).float().tolist()
                      for name, fn in scorers.items()})
        blocks = [b for b in getattr(getattr(reward, "spec", None), "blocks", ()) if b != "text"]
        embeddings = {b: v.float().cpu() for b, v in reward.cached_audio_blocks(
            audio, generator.sample_rate, blocks).items()} if blocks else {}  # the reward's own features: no pass
    return {**draws, "compute": compute.as_dict(), "embeddings": embeddings}


def save_prompt(out: Path, prompt_index: int, result: DittoResult, config: DittoConfig,
                draws: dict | None = None) -> dict:
    """Write the prompt's audio and noise, then its done marker (the commit point)."""
    atomic_write_audio(out / audio_path("baseline", prompt_index), result.baseline_audio, result.sample_rate)
    atomic_write_audio(out / audio_path("optimised", prompt_index), result.optimised_audio, result.sample_rate)
    save_tensor(out / noise_path(prompt_index), result.optimised_noise.contiguous())
    summary = {
        "prompt_index": prompt_index, "prompt": result.prompt, "seed": result.seed,
        "baseline_reward": result.baseline_reward, "optimised_reward": result.optimised_reward,
        "gain": result.gain, "best_iteration": result.best_iteration,
        "seconds": sum(r.seconds for r in result.history),
        "peak_memory": max(r.peak_memory for r in result.history), "memory_kind": result.memory_kind,
        **{key: getattr(config, key) for key in MEMORY_SETTINGS},
        "baseline": audio_path("baseline", prompt_index), "optimised": audio_path("optimised", prompt_index),
        "noise": noise_path(prompt_index),
        "compute": result.compute.add(draws and draws.pop("compute")).as_dict(),
    }
    if draws is not None:
        embeddings = draws.pop("embeddings")
        if embeddings:
            save_tensor(out / draws_path(prompt_index), embeddings)
        summary["plain_draws"] = {**draws, "embeddings": draws_path(prompt_index) if embeddings else None}
    for name, value in result.baseline_extras.items():  # e.g. the debug world's truth, before and after
        summary[f"baseline_{name}"], summary[f"optimised_{name}"] = value, result.optimised_extras[name]
    atomic_write_json(out / done_path(prompt_index), summary)
    return summary


@holds_run_lock
def run_ditto(
    generator,
    reward: Callable,
    prompts: list[str],
    config: DittoConfig,
    out: Path,
    meta: dict,
    *,
    progress: Callable[[int], None] | None = None,
    scorers: dict[str, Callable] | None = None,
    reference: Path | None = None,
) -> dict:
    """Run (or resume) DITTO on every prompt into ``out``; returns the summary (also ``summary.json``, with the
    hacking alarm; ``reference``: a folder of audio for its distribution checks, default the baselines).
    ``progress(k)`` is called with the number of iterates scored (``iterations + 1`` per skipped prompt)."""
    # 1. Folder: refuse a run made with other settings; forget partial work
    out = Path(out)
    prepare_run_dir(out, meta, is_main=True)
    generator = as_diffusion_generator(generator)
    finished = finished_prompts(out, len(prompts))
    drop_unfinished_records(out, finished)
    per_prompt = config.iterations + 1

    # 2. One prompt at a time; each iterate's record is appended as soon as it is made
    for prompt_index, prompt in enumerate(prompts):
        if prompt_index in finished:
            if progress is not None:
                progress(per_prompt)
            continue

        def on_iteration(record: IterationRecord, prompt_index: int = prompt_index) -> None:
            append_jsonl(out / LOG, [{"prompt_index": prompt_index, **record.as_dict()}])
            if progress is not None:
                progress(1)

        result = ditto(generator, reward, prompt, config=config, on_iteration=on_iteration, scorers=scorers)
        save_prompt(out, prompt_index, result, config, baseline_draws(generator, reward, prompt, config, scorers))
        logger.info("prompt %d: reward %.4f -> %.4f (best iterate %d)", prompt_index, result.baseline_reward,
                    result.optimised_reward, result.best_iteration)

    # 3. Summary of every finished prompt, once every prompt is
    unfinished = set(range(len(prompts))) - finished_prompts(out, len(prompts))
    require_complete(out, {p: [] for p in unfinished}, len(prompts), "prompt")
    return write_summary(out, prompts, meta, reward=reward, reference=reference)


def write_summary(out: Path, prompts: list[str], meta: dict, reward: Callable | None = None,
                  reference: Path | None = None) -> dict:
    """``summary.json``: every finished prompt's rewards before / after, the mean gains; with ``reward``, once
    every prompt is done, the hacking alarm (:mod:`.alarm`)."""
    rows = [json.loads((out / done_path(p)).read_text()) for p in sorted(finished_prompts(out, len(prompts)))]
    count = len(rows)
    summary = {
        "prompts": len(prompts), "finished": count,
        "debug": is_debug(meta),
        "mean_baseline_reward": sum(r["baseline_reward"] for r in rows) / count if count else None,
        "mean_optimised_reward": sum(r["optimised_reward"] for r in rows) / count if count else None,
        "mean_gain": sum(r["gain"] for r in rows) / count if count else None,
        "per_prompt": rows,
    }
    extra_names = sorted({key[len("baseline_"):] for r in rows for key in r if key.startswith("baseline_")} - {"reward"})
    for name in extra_names:  # the extra scorers' mean before and after (e.g. the debug world's truth)
        values = [(r[f"baseline_{name}"], r[f"optimised_{name}"]) for r in rows if f"baseline_{name}" in r]
        summary[f"mean_baseline_{name}"] = sum(v[0] for v in values) / len(values)
        summary[f"mean_optimised_{name}"] = sum(v[1] for v in values) / len(values)
        summary[f"mean_{name}_gain"] = summary[f"mean_optimised_{name}"] - summary[f"mean_baseline_{name}"]
    summary["compute"] = total(r.get("compute") for r in rows).as_dict()
    atomic_write_json(out / "summary.json", summary)
    if count == len(prompts):
        record_run_compute(out, total(r.get("compute") for r in rows))
        if reward is not None:
            summary = ditto_alarm(out, reward, prompts, rows, summary, audio_path, reference)
    return summary


def ditto_run_meta(config: DittoConfig, prompts: list[str], generator, reward) -> dict:
    """``run.json`` of a DITTO run; the memory-only settings may change on a resume."""
    return run_meta("ditto", config, prompts, as_diffusion_generator(generator), reward, unchecked=MEMORY_SETTINGS,
                    unchecked_key="memory_settings")
