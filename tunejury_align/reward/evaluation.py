"""Evaluate a reward against human judgements, with the published metrics (Kim et al., 2026).

* Preference pairs: pairwise accuracy on non-tie pairs (margin ``s(A) - s(B) > 0`` predicts A) and
  the ECE of ``sigmoid(|margin|)`` over 10 equal-count bins of ``|margin|``, with the bins.
* MOS sets: Spearman correlation between scores and mean opinion scores, average ranks for ties.

Pairs come from :func:`~tunejury_align.reward.calibration.read_pairs` (scores or audio); MOS files are
CSV or JSONL with a ``mos`` column and either ``score`` or ``audio`` (plus an optional ``prompt``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .calibration import Calibration, Pair, PairsError, read_rows, resolve_audio
from .metrics import expected_calibration_error, pairwise_accuracy, spearman


@dataclass(frozen=True)
class MosItem:
    """One rated clip: its mean opinion score and either a precomputed reward ``score`` or ``audio``."""

    mos: float
    score: float | None = None
    audio: str | None = None
    prompt: str = ""
    where: str = ""


def read_mos(path: str | Path) -> list[MosItem]:
    """Read a MOS file (CSV or JSONL): ``mos`` and ``score``, or ``mos`` and ``audio`` (+ ``prompt``)."""
    path = Path(path)
    items = []
    for where, row in read_rows(path):
        values = {}
        for key in ("mos", "score"):
            text = "" if row.get(key) is None else str(row[key]).strip()
            if text:
                try:
                    values[key] = float(text)
                except ValueError as err:
                    raise PairsError(f"{where}: '{key}' is not a number: {text!r}") from err
                if not np.isfinite(values[key]):
                    raise PairsError(f"{where}: '{key}' is not finite: {text!r}")
        audio = str(row.get("audio") or "").strip()
        if "mos" not in values:
            raise PairsError(f"{where}: needs a 'mos' value (columns: {sorted(row)})")
        if "score" not in values and not audio:
            raise PairsError(f"{where}: needs a 'score' or an 'audio' file")
        items.append(MosItem(mos=values["mos"], score=values.get("score"),
                             audio=resolve_audio(audio, path.parent) if audio else None,
                             prompt=str(row.get("prompt") or "").strip(), where=where))
    return items


def score_pairs(pairs: Sequence[Pair], reward) -> tuple[list[Pair], dict[str, str]]:
    """Fill ``score_a``/``score_b`` of audio pairs with ``reward.score_files`` (each distinct
    ``(file, prompt)`` scored once). Pairs that already hold scores are kept as they are.

    Returns ``(scored pairs, failures)``; ``failures`` maps an unreadable file to its error, and pairs
    that use such a file are left out of the result.
    """
    from .audio import AudioError

    cache: dict[tuple[str, str], float] = {}
    failures: dict[str, str] = {}

    def score(audio: str, prompt: str) -> float | None:
        if audio in failures:
            return None
        if (audio, prompt) not in cache:
            try:
                cache[(audio, prompt)] = reward.score_files([audio], [prompt])[0]
            except AudioError as err:
                failures[audio] = str(err)
                return None
        return cache[(audio, prompt)]

    scored = []
    for pair in pairs:
        if pair.has_scores:
            scored.append(pair)
            continue
        score_a, score_b = score(pair.audio_a, pair.prompt), score(pair.audio_b, pair.prompt)
        if score_a is not None and score_b is not None:
            scored.append(replace(pair, score_a=score_a, score_b=score_b))
    return scored, failures


def score_mos(items: Sequence[MosItem], reward) -> tuple[list[MosItem], dict[str, str]]:
    """Fill the ``score`` of audio items with ``reward.score_files``; ``(scored items, failures)``,
    unreadable files left out and reported as ``{file: error}``."""
    from .audio import AudioError

    scored, failures = [], {}
    for item in items:
        if item.score is not None:
            scored.append(item)
            continue
        try:
            scored.append(replace(item, score=reward.score_files([item.audio], [item.prompt])[0]))
        except AudioError as err:
            failures[item.audio] = str(err)
    return scored, failures


def evaluate_pairs(pairs: Sequence[Pair], calibration: Calibration | None = None, bins: int = 10) -> dict:
    """Pairwise accuracy and ECE of scored pairs (ties counted, then left out).

    ``calibration``: subtract its per-system biases first (a system it does not know gets 0).
    Returns ``{"pairs", "ties", "used", "accuracy", "ece", "bins", "calibrated"}``.
    """
    for pair in pairs:
        if not pair.has_scores:
            raise PairsError(f"{pair.where}: no scores; score the audio first (score_pairs)")
    used = [p for p in pairs if not p.is_tie]
    calibration = calibration or Calibration(biases={})
    margins = np.array([calibration.margin(p) for p in used], dtype=np.float64)
    a_wins = np.array([p.winner == "A" for p in used], dtype=bool)
    accuracy, _ = pairwise_accuracy(margins, a_wins)
    ece, table = expected_calibration_error(margins, a_wins, bins=bins)
    return {"pairs": len(pairs), "ties": len(pairs) - len(used), "used": len(used), "accuracy": accuracy,
            "ece": ece, "bins": table, "calibrated": bool(calibration.biases)}


def evaluate_mos(items: Sequence[MosItem]) -> dict:
    """Spearman correlation of scores with MOS (average ranks for ties): ``{"items", "spearman"}``."""
    missing = [item.where for item in items if item.score is None]
    if missing:
        raise PairsError(f"{missing[0]}: no score; score the audio first (score_mos)")
    if len(items) < 2:
        raise PairsError(f"Spearman needs at least 2 rated items, got {len(items)}")
    return {"items": len(items), "spearman": spearman([i.score for i in items], [i.mos for i in items])}
