"""Run folders, for every recipe driver: atomic writes, append-only progress logs, run metadata.

A run folder holds ``run.json`` (what was run: command, settings, prompts, models, versions) and the
recipe's outputs. Everything is written atomically (temporary file, fsync, rename) or appended to a
JSONL log with fsync, so a killed run leaves either whole files or a torn last log line, and
rerunning the same command resumes it. A folder made with other settings is refused
(:class:`RunMismatchError`) instead of being mixed with the new run.

Generate-and-score work (best-of-N, expert iteration's sampling) is logged in units: one line per
finished unit in ``.progress/rank<R>.jsonl`` (one log per process), read back with
:func:`load_unit_scores`.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

RUN_FILE = "run.json"
#: what must match for a folder to be resumed (timings, versions and loose settings may change)
FINGERPRINT_KEYS = ("config", "prompts", "generator", "reward")


class RunMismatchError(ValueError):
    """The output folder holds a run made with different settings."""


# -- atomic writes -----------------------------------------------------------------------------
def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def atomic_write_audio(path: Path, audio: torch.Tensor, sample_rate: int) -> None:
    """``(C, T)`` float in [-1, 1] -> 16-bit WAV, written atomically."""
    import soundfile as sf

    buffer = io.BytesIO()
    data = audio.detach().float().cpu().clamp(-1, 1).numpy().T
    sf.write(buffer, np.ascontiguousarray(data), int(sample_rate), format="WAV", subtype="PCM_16")
    atomic_write_bytes(path, buffer.getvalue())


def save_tensor(path: Path, obj) -> None:
    """``torch.save`` of a tensor (or a dict of tensors and plain values), written atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_tensor(path: Path):
    """Read back what :func:`save_tensor` wrote (``weights_only=True``, on the CPU)."""
    return torch.load(path, map_location="cpu", weights_only=True)


# -- JSONL logs --------------------------------------------------------------------------------
def jsonl_text(records: Iterable[dict]) -> str:
    return "".join(json.dumps(record, sort_keys=True) + "\n" for record in records)


def append_jsonl(path: Path, records: list[dict]) -> None:
    """Append records and fsync: a record is either wholly on disk or (last line, torn) ignored."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(jsonl_text(records))
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """Records of a progress log; a torn last line (killed mid-write) is dropped."""
    if not Path(path).is_file():
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def rewrite_jsonl(path: Path, records: list[dict]) -> None:
    """Replace a log's content with ``records`` (atomically)."""
    atomic_write_text(path, jsonl_text(records))


# -- generate-and-score units ------------------------------------------------------------------
def progress_log(folder: Path, rank: int) -> Path:
    return Path(folder) / ".progress" / f"rank{rank}.jsonl"


def log_unit(folder: Path, rank: int, prompt_index: int, candidates: list[int], seeds: list[int],
             scores, extras: dict | None = None) -> None:
    """Append one finished unit (a prompt's candidates with their seeds, scores and extra scores, e.g.
    the debug world's truth) to this process's log."""
    record = {"prompt_index": prompt_index, "candidates": candidates, "seeds": seeds,
              "scores": [float(s) for s in scores]}
    if extras:
        record["extras"] = {name: [float(v) for v in values] for name, values in extras.items()}
    append_jsonl(progress_log(folder, rank), [record])


def load_unit_scores(folder: Path) -> dict[tuple[int, int], float]:
    """``(prompt index, candidate) -> score`` over every process's progress log in ``folder``."""
    completed = {}
    for log in sorted((Path(folder) / ".progress").glob("rank*.jsonl")):
        for record in read_jsonl(log):
            for c, score in zip(record["candidates"], record["scores"]):
                completed[(record["prompt_index"], c)] = score
    return completed


def load_unit_extras(folder: Path) -> dict[str, dict[tuple[int, int], float]]:
    """``scorer -> {(prompt index, candidate) -> value}`` for the extra scores in the progress logs."""
    extras: dict[str, dict[tuple[int, int], float]] = {}
    for log in sorted((Path(folder) / ".progress").glob("rank*.jsonl")):
        for record in read_jsonl(log):
            for name, values in (record.get("extras") or {}).items():
                for c, value in zip(record["candidates"], values):
                    extras.setdefault(name, {})[(record["prompt_index"], c)] = value
    return extras


def score_matrix(completed: dict[tuple[int, int], float], num_prompts: int, per_prompt: int) -> np.ndarray:
    """``(P, K)`` scores from :func:`load_unit_scores`, NaN where missing."""
    scores = np.full((num_prompts, per_prompt), np.nan)
    for (p, c), score in completed.items():
        scores[p, c] = score
    return scores


# -- run metadata ------------------------------------------------------------------------------
def reward_info(reward) -> dict:
    """Provenance of any reward callable (TuneJuryReward's ``info``, or its name)."""
    info = getattr(reward, "info", None)
    if info is not None and hasattr(info, "as_dict"):
        return info.as_dict()
    return {"reward": getattr(reward, "__name__", type(reward).__name__), "debug": False}


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of torch and ``names`` ("not installed" where absent), for provenance."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("torch", *names):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def run_meta(command: str, config, prompts, generator, reward, unchecked: tuple[str, ...] = (),
             unchecked_key: str = "unchecked_settings") -> dict:
    """``run.json`` content. ``unchecked``: config fields a resume may change (stored apart, under
    ``unchecked_key``); every other field must match to resume."""
    settings = asdict(config)
    loose = {key: settings.pop(key) for key in unchecked}
    meta = {"command": command, "config": settings, "prompts": prompts, "generator": generator.info(),
            "reward": reward if isinstance(reward, dict) else reward_info(reward),
            "versions": library_versions("transformers", "diffusers", "tunejury-align")}
    if unchecked:
        meta[unchecked_key] = loose
    return meta


def is_debug(meta: dict) -> bool:
    """True when the run used a debug generator or reward (its numbers mean nothing)."""
    return bool((meta.get("generator") or {}).get("debug") or (meta.get("reward") or {}).get("debug"))


def prepare_run_dir(out: Path, meta: dict, is_main: bool = True) -> None:
    """Create ``out`` and write ``run.json``, or check that the run already there has the same
    settings (:data:`FINGERPRINT_KEYS`); raises :class:`RunMismatchError` otherwise."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    existing = out / RUN_FILE
    if existing.is_file():
        previous = json.loads(existing.read_text())
        changed = [key for key in FINGERPRINT_KEYS if previous.get(key) != meta.get(key)]
        if changed:
            raise RunMismatchError(f"{out} holds a run with different {changed}; use another --out to start a new "
                                   "run, or the same settings to resume it")
    elif is_main:
        atomic_write_json(existing, meta)
