"""Run folders, for every recipe driver: atomic writes, append-only progress logs, run metadata.

A run folder holds ``run.json`` (what was run: command, settings, prompts, models, versions) and the
recipe's outputs. Everything is written atomically (temporary file, fsync, rename) or appended to a
JSONL log with fsync, so a killed run (or a full disk) leaves either whole files or a torn last log
line, which the next append cuts away; rerunning the same command resumes it. A folder made with other
settings is refused (:class:`RunMismatchError`, naming what changed) instead of being mixed with the
new run; a folder another process is running in is refused (:class:`RunLockedError`: an advisory
``fcntl.flock`` on ``.lock``, held for the run by :func:`holds_run_lock`); a log line that cannot be
read back is an error naming the file and line (:class:`RunFileError`), never skipped.

Generate-and-score work (best-of-N, expert iteration's sampling) is logged in units: one line per
finished unit in ``.progress/rank<R>.jsonl`` (one log per process), read back with
:func:`load_unit_scores`.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

try:
    import fcntl
except ImportError:  # not on POSIX: runs are not locked
    fcntl = None

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
#: what must match for a folder to be resumed (timings, versions and loose settings may change)
FINGERPRINT_KEYS = ("config", "prompts", "generator", "reward", "judges", "world")


class RunMismatchError(ValueError):
    """The output folder holds a run made with different settings."""


class RunFileError(ValueError):
    """A file of a run folder that cannot be read back: a damaged line, a value of the wrong kind."""


class RunIncompleteError(RuntimeError):
    """A run reached its end without every unit of work on disk."""


class RunLockedError(RuntimeError):
    """Another process is running in the output folder."""


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
    """Append records and fsync. A torn last line left by a killed writer is cut away first (a whole
    record that only lost its newline is kept), so that what is appended stays readable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        _end_cleanly(handle, path)
        handle.write(jsonl_text(records).encode())
        handle.flush()
        os.fsync(handle.fileno())


def _end_cleanly(handle, path: Path, window: int = 1 << 16) -> None:
    """Make the log end with a whole record and a newline: read its tail only (appends stay O(1))."""
    size = handle.seek(0, os.SEEK_END)
    start = max(0, size - window)
    handle.seek(start)
    tail = handle.read()
    if b"\n" not in tail[:-1] and start > 0:  # the last line is longer than the window
        handle.seek(0)
        start, tail = 0, handle.read()
    body = tail[:-1] if tail.endswith(b"\n") else tail
    cut = body.rfind(b"\n") + 1  # where the last line starts
    last = body[cut:]
    whole = not last.strip() or _parse_record(last)[0] is not None
    if whole and not tail.endswith(b"\n") and last.strip():
        handle.write(b"\n")
    if whole:
        return
    handle.truncate(start + cut)
    logger.warning("%s: cut a torn last line left by an interrupted write (%d bytes: %r...); its work is redone",
                   path, len(last), last[:60])


def _parse_record(line: bytes) -> tuple[dict | None, str]:
    try:
        record = json.loads(line)
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        return None, f"not valid JSON ({err})"
    if not isinstance(record, dict):
        return None, f"expected a JSON object, got {type(record).__name__}"
    return record, ""


#: kinds of the values :func:`read_jsonl` checks; a trailing ``?`` also allows null (or a missing key)
KINDS = {"int": "an integer", "number": "a number", "bool": "true or false", "str": "a string",
         "int[]": "a list of integers", "number[]": "a list of numbers"}


def _is_kind(value, kind: str) -> bool:
    if value is None:
        return kind.endswith("?")
    kind = kind.rstrip("?")
    if kind.endswith("[]"):
        return isinstance(value, list) and all(_is_kind(v, kind[:-2]) for v in value)
    if isinstance(value, bool):
        return kind == "bool"
    return isinstance(value, {"int": int, "number": (int, float), "str": str, "bool": bool}[kind])


def check_record(record: dict, fields: dict[str, str], limits: dict[str, int | None], where: str) -> None:
    """Raise :class:`RunFileError` unless each ``fields`` key holds its kind (:data:`KINDS`) and each
    ``limits`` key an index (or indices) in ``0 .. limit - 1`` (``None``: any index >= 0)."""
    for key, kind in fields.items():
        value = record.get(key)
        if not _is_kind(value, kind):
            null = " or null" if kind.endswith("?") else ""
            raise RunFileError(f"{where}: '{key}' must be {KINDS[kind.rstrip('?')]}{null}, got {value!r}")
    for key, limit in limits.items():
        value = record.get(key)
        values = value if isinstance(value, list) else [value]
        if value is not None and any(v < 0 or (limit is not None and v >= limit) for v in values):
            upper = f"0 .. {limit - 1}" if limit is not None else ">= 0"
            raise RunFileError(f"{where}: '{key}' must be an index in {upper}, got {value!r}; the folder was "
                               "changed outside align: fix or delete that line (its work is redone), or use a new --out")


def read_jsonl(path: Path, fields: dict[str, str] | None = None, limits: dict[str, int | None] | None = None
               ) -> list[dict]:
    """Records of a JSONL log, each checked with :func:`check_record` (``fields``, ``limits``).

    A last line that does not parse is a write torn by a kill: it is left out (the next
    :func:`append_jsonl` cuts it). Any other line that does not parse raises :class:`RunFileError`
    naming the file and line: a torn line can only be the last, so that one was damaged otherwise.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = [(number, line) for number, line in enumerate(path.read_bytes().split(b"\n"), 1) if line.strip()]
    records = []
    for number, line in lines:
        record, problem = _parse_record(line)
        if record is None:
            if number == lines[-1][0]:
                logger.info("%s, line %d: a torn last line (an interrupted write), left out", path, number)
                break
            raise RunFileError(f"{path}, line {number}: {problem}. Only the last line can be torn by an "
                               "interrupted write, so this file was damaged otherwise: fix or delete that line "
                               "(its work is redone), or start a new run with another --out")
        check_record(record, fields or {}, limits or {}, f"{path}, line {number}")
        records.append(record)
    return records


def rewrite_jsonl(path: Path, records: list[dict]) -> None:
    """Replace a log's content with ``records`` (atomically)."""
    atomic_write_text(path, jsonl_text(records))


# -- generate-and-score units ------------------------------------------------------------------
def progress_log(folder: Path, rank: int) -> Path:
    return Path(folder) / ".progress" / f"rank{rank}.jsonl"


def log_unit(folder: Path, rank: int, prompt_index: int, candidates: list[int], seeds: list[int],
             scores, extras: dict | None = None, **fields) -> None:
    """Append one finished unit (a prompt's candidates with their seeds, scores and extra scores, e.g.
    the debug world's truth, and any other ``fields``, e.g. its compute) to this process's log."""
    record = {"prompt_index": prompt_index, "candidates": candidates, "seeds": seeds,
              "scores": [float(s) for s in scores], **fields}
    if extras:
        record["extras"] = {name: [float(v) for v in values] for name, values in extras.items()}
    append_jsonl(progress_log(folder, rank), [record])


UNIT_FIELDS = {"prompt_index": "int", "candidates": "int[]", "seeds": "int[]", "scores": "number[]"}


def load_unit_scores(folder: Path, num_prompts: int | None = None,
                     per_prompt: int | None = None) -> dict[tuple[int, int], float]:
    """``(prompt index, candidate) -> score`` over every process's progress log in ``folder``; each
    record is checked (:data:`UNIT_FIELDS`, indices below ``num_prompts`` / ``per_prompt`` when given)."""
    completed = {}
    limits = {"prompt_index": num_prompts, "candidates": per_prompt}
    for log in sorted((Path(folder) / ".progress").glob("rank*.jsonl")):
        for record in read_jsonl(log, UNIT_FIELDS, limits):
            for c, score in zip(record["candidates"], record["scores"]):
                completed[(record["prompt_index"], c)] = score
    return completed


def load_unit_extras(folder: Path, field: str = "extras") -> dict[str, dict[tuple[int, int], float]]:
    """``scorer -> {(prompt index, candidate) -> value}`` for the extra scores in the progress logs (``field``:
    another per-candidate record, e.g. ``probes``, the alarm's clip measures)."""
    extras: dict[str, dict[tuple[int, int], float]] = {}
    for log in sorted((Path(folder) / ".progress").glob("rank*.jsonl")):
        for record in read_jsonl(log):
            for name, values in (record.get(field) or {}).items():
                for c, value in zip(record["candidates"], values):
                    extras.setdefault(name, {})[(record["prompt_index"], c)] = value
    return extras


def score_matrix(completed: dict[tuple[int, int], float], num_prompts: int, per_prompt: int) -> np.ndarray:
    """``(P, K)`` scores from :func:`load_unit_scores`, NaN where missing."""
    scores = np.full((num_prompts, per_prompt), np.nan)
    for (p, c), score in completed.items():
        scores[p, c] = score
    return scores


def require_complete(folder: Path, missing: dict[int, list[int]], total: int, unit: str) -> None:
    """Raise :class:`RunIncompleteError` when a finished run lacks units: ``missing`` maps a prompt
    index to its missing items (``[]``: the prompt itself); ``total`` units of kind ``unit``."""
    if not missing:
        return
    count = sum(len(items) or 1 for items in missing.values())
    detail = "; ".join(f"prompt {p}" + (f" ({unit}s {', '.join(map(str, items))})" if items else "")
                       for p, items in sorted(missing.items())[:5])
    more = f"; and {len(missing) - 5} more prompt(s)" if len(missing) > 5 else ""
    raise RunIncompleteError(f"{folder}: the run is incomplete: {count} of {total} {unit}(s) have no record "
                             f"({detail}{more}). Nothing finished is lost: rerun the same command to redo them")


def missing_units(scores: np.ndarray) -> dict[int, list[int]]:
    """``{prompt: [candidates]}`` of the NaN entries of a ``(P, K)`` score matrix."""
    missing: dict[int, list[int]] = {}
    for p, c in np.argwhere(np.isnan(scores)):
        missing.setdefault(int(p), []).append(int(c))
    return missing


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
    settings (:data:`FINGERPRINT_KEYS`); raises :class:`RunMismatchError` naming what changed otherwise."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    existing = out / RUN_FILE
    if existing.is_file():
        previous = json.loads(existing.read_text())
        changed = [line for key in FINGERPRINT_KEYS if previous.get(key) != meta.get(key)
                   for line in differences(previous.get(key), meta.get(key), key)]
        if changed:
            more = f"; and {len(changed) - 8} more" if len(changed) > 8 else ""
            raise RunMismatchError(f"{out} holds a run made with other settings: {'; '.join(changed[:8])}{more}. "
                                   "Use another --out to start a new run, or the same settings to resume this one")
    elif is_main:
        atomic_write_json(existing, meta)


def differences(old, new, path: str) -> list[str]:
    """``path: old -> new`` for each value that differs, nested keys as dotted paths, list items as
    ``[i]``; long values shortened."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{path}.{key}"
            if key not in old or key not in new:
                lines.append(f"{where}: {short(old.get(key, '(absent)'))} -> {short(new.get(key, '(absent)'))}")
            elif old[key] != new[key]:
                lines.extend(differences(old[key], new[key], where))
        return lines
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{path}: {len(old)} item(s) -> {len(new)} item(s)"]
        return [line for i, (a, b) in enumerate(zip(old, new)) if a != b for line in differences(a, b, f"{path}[{i}]")]
    return [f"{path}: {short(old)} -> {short(new)}"]


def short(value, width: int = 40) -> str:
    text = value if value == "(absent)" else repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


# -- one run per folder ------------------------------------------------------------------------
_held: set[Path] = set()  # folders whose lock this process holds


@contextmanager
def run_lock(out: Path, *, is_main: bool = True):
    """Hold an advisory ``fcntl.flock`` on ``out/.lock`` while the block runs; another process that
    asks for it gets :class:`RunLockedError` at once (refused, not queued). The lock goes with the
    process that holds it, however it ends. Under ``accelerate launch`` only the main process takes
    it (``is_main``): the ranks of one run share the folder. Re-entrant within a process."""
    out = Path(out)
    key = out.resolve()
    if not is_main or fcntl is None or key in _held:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunLockedError(f"{out} is in use by another run ({holder}); wait for it to finish, or use another "
                             f"--out. (An advisory lock on {out / LOCK_FILE}, released when that process ends.)"
                             ) from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    _held.add(key)
    try:
        yield
    finally:
        _held.discard(key)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def holds_run_lock(driver):
    """Decorator of a recipe driver ``driver(..., out, ..., rank=0)``: :func:`run_lock` on ``out``
    (rank 0 only) for the whole call."""
    signature = inspect.signature(driver)

    @functools.wraps(driver)
    def locked(*args, **kwargs):
        arguments = signature.bind(*args, **kwargs).arguments
        with run_lock(arguments["out"], is_main=arguments.get("rank", 0) == 0):
            return driver(*args, **kwargs)

    return locked
