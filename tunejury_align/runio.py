"""Run folders: atomic writes, an append-only progress log that survives a kill, run metadata."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch


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
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    data = audio.detach().float().cpu().clamp(-1, 1).numpy().T
    sf.write(buffer, np.ascontiguousarray(data), int(sample_rate), format="WAV", subtype="PCM_16")
    atomic_write_bytes(path, buffer.getvalue())


def append_jsonl(path: Path, records: list[dict]) -> None:
    """Append records and fsync: a record is either wholly on disk or (last line, torn) ignored."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
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
