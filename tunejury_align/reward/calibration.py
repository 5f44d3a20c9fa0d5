"""Anchor calibration: one additive bias per generator system, fitted from K anchor preference pairs.

TuneJury (Kim et al., 2026, arXiv 2606.17006), "anchor calibration": for a generator the head never
saw in training, keep the reward frozen and model a human preference as

    P(A wins) = sigmoid((r_A - b[system_A]) - (r_B - b[system_B]))

with one bias per system, fitted by penalised maximum likelihood (Newton's method with the analytic
gradient and Hessian; the objective is convex). Fitting K = 250 pairs takes milliseconds.

Pair files (CSV or JSONL, read by :func:`read_pairs`) hold either precomputed scores
(``score_a, score_b, system_a, system_b, winner``) or audio (``audio_a, audio_b, prompt, system_a,
system_b, winner``, scored with the reward by
:func:`tunejury_align.reward.evaluation.score_pairs`). ``winner`` is ``A``, ``B`` or
``tie`` (case-insensitive; ``model_a`` / ``model_b`` accepted); any other label is an error naming
the row, never a tie.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

WINNER_LABELS = {"a": "A", "model_a": "A", "b": "B", "model_b": "B", "tie": "tie"}
CALIBRATION_FORMAT = "tunejury-calibration/1"
PENALTY = "sum_i NLL_i + l2 * sum_s b_s**2"


class PairsError(ValueError):
    """A pairs file that cannot be used; the message names the file and row."""


class PinMissingWarning(UserWarning):
    """The pinned system does not appear in the anchor pairs, so the pin constrains nothing."""


# -- pair files ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    """One preference judgement between clip A and clip B. ``where`` is ``file:line`` for messages."""

    winner: str  # "A", "B" or "tie"
    system_a: str | None = None
    system_b: str | None = None
    score_a: float | None = None
    score_b: float | None = None
    audio_a: str | None = None
    audio_b: str | None = None
    prompt: str = ""
    where: str = ""

    @property
    def is_tie(self) -> bool:
        return self.winner == "tie"

    @property
    def target(self) -> float:
        """RankNet target: 1 (A wins), 0 (B wins), 0.5 (tie)."""
        return {"A": 1.0, "B": 0.0, "tie": 0.5}[self.winner]

    @property
    def has_scores(self) -> bool:
        return self.score_a is not None and self.score_b is not None


def parse_winner(label, where: str = "") -> str:
    """``A``/``B``/``tie`` (any case) or ``model_a``/``model_b`` -> ``"A"``, ``"B"`` or ``"tie"``."""
    key = str(label).strip().lower() if label is not None else ""
    if key not in WINNER_LABELS:
        raise PairsError(f"{where}: unknown winner label {label!r}; use A, B or tie (model_a / model_b also "
                         "accepted). Unknown labels are errors, never ties")
    return WINNER_LABELS[key]


def read_rows(path: str | Path) -> list[tuple[str, dict]]:
    """``[(where, row), ...]`` from a CSV (header row) or JSONL (one object per line) file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise PairsError(f"{path}: no such file")
    rows: list[tuple[str, dict]] = []
    if path.suffix.lower() in {".jsonl", ".json"}:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise PairsError(f"{path}:{number}: invalid JSON ({err})") from err
            if not isinstance(row, dict):
                raise PairsError(f"{path}:{number}: expected a JSON object")
            rows.append((f"{path}:{number}", row))
    else:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                rows.append((f"{path}:{reader.line_num}", row))
    if not rows:
        raise PairsError(f"{path}: holds no rows")
    return rows


def _text(row: dict, key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _float(row: dict, key: str, where: str) -> float | None:
    text = _text(row, key)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError as err:
        raise PairsError(f"{where}: '{key}' is not a number: {text!r}") from err
    if not np.isfinite(value):
        raise PairsError(f"{where}: '{key}' is not finite: {text!r}")
    return value


def read_pairs(path: str | Path, require_systems: bool = False) -> list[Pair]:
    """Read a pairs file (CSV or JSONL), in file order.

    Each row needs ``winner`` and either ``score_a``/``score_b`` or ``audio_a``/``audio_b`` (with an
    optional ``prompt``; empty means the empty-prompt protocol). Relative audio paths are resolved
    against the pairs file's folder when the file exists there, else kept as given (the working folder).
    Raises :class:`PairsError` naming the row for a missing field or an unknown winner label.
    """
    path = Path(path)
    pairs = []
    for where, row in read_rows(path):
        if "winner" not in row:
            raise PairsError(f"{where}: no 'winner' field (columns: {sorted(row)})")
        score_a, score_b = _float(row, "score_a", where), _float(row, "score_b", where)
        audio_a, audio_b = _text(row, "audio_a"), _text(row, "audio_b")
        has_scores, has_audio = score_a is not None and score_b is not None, bool(audio_a and audio_b)
        if not (has_scores or has_audio):
            raise PairsError(f"{where}: needs 'score_a' and 'score_b', or 'audio_a' and 'audio_b'")
        system_a, system_b = _text(row, "system_a"), _text(row, "system_b")
        if require_systems and not (system_a and system_b):
            raise PairsError(f"{where}: needs 'system_a' and 'system_b' (the generator of each clip)")
        pairs.append(Pair(winner=parse_winner(row["winner"], where), system_a=system_a, system_b=system_b,
                          score_a=score_a, score_b=score_b,
                          audio_a=resolve_audio(audio_a, path.parent) if audio_a else None,
                          audio_b=resolve_audio(audio_b, path.parent) if audio_b else None,
                          prompt=_text(row, "prompt") or "", where=where))
    return pairs


def resolve_audio(audio: str, base: Path) -> str:
    candidate = Path(audio).expanduser()
    if not candidate.is_absolute() and (base / candidate).exists():
        return str(base / candidate)
    return str(candidate)


# -- the fit -----------------------------------------------------------------------------------
@dataclass
class Calibration:
    """Per-system additive biases. A calibrated score is ``score - biases[system]`` (0 for an unknown
    system: a system absent from the anchor pairs stays uncalibrated)."""

    biases: dict[str, float]
    pinned: str | None = None
    pin_missing: bool = False
    l2: float = 1.0
    pairs: int = 0
    ties: int = 0
    iterations: int = 0
    converged: bool = True
    objective: float = 0.0
    extra: dict = field(default_factory=dict)

    def bias(self, system: str | None) -> float:
        return float(self.biases.get(system, 0.0)) if system is not None else 0.0

    def calibrated(self, score: float, system: str | None) -> float:
        return score - self.bias(system)

    def margin(self, pair: Pair) -> float:
        """Calibrated ``(r_A - b_A) - (r_B - b_B)``."""
        return self.calibrated(pair.score_a, pair.system_a) - self.calibrated(pair.score_b, pair.system_b)

    def as_dict(self) -> dict:
        """The JSON written by ``align calibrate`` and read by ``align score --calibration``."""
        return {"format": CALIBRATION_FORMAT, "biases": dict(self.biases), "pinned": self.pinned,
                "pin_missing": self.pin_missing, "l2": self.l2, "penalty": PENALTY, "pairs": self.pairs,
                "ties_excluded": self.ties, "iterations": self.iterations, "converged": self.converged,
                "objective": self.objective, **self.extra}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        if not isinstance(data, dict) or not isinstance(data.get("biases"), dict):
            raise ValueError("a calibration is a JSON object with a 'biases' mapping {system: bias}")
        return cls(biases={str(k): float(v) for k, v in data["biases"].items()}, pinned=data.get("pinned"),
                   pin_missing=bool(data.get("pin_missing", False)), l2=float(data.get("l2", 1.0)),
                   pairs=int(data.get("pairs", 0)), ties=int(data.get("ties_excluded", 0)))

    def save(self, path: str | Path) -> None:
        from ..rundir import atomic_write_json

        atomic_write_json(Path(path), self.as_dict())

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _design(pairs: Sequence[Pair], systems: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X (K, S), offsets (K,), y (K,))`` with ``margin = offsets - X @ b``."""
    column = {s: i for i, s in enumerate(systems)}
    design = np.zeros((len(pairs), len(systems)))
    rows = np.arange(len(pairs))
    np.add.at(design, (rows, [column[p.system_a] for p in pairs]), 1.0)
    np.add.at(design, (rows, [column[p.system_b] for p in pairs]), -1.0)
    offsets = np.array([p.score_a - p.score_b for p in pairs], dtype=np.float64)
    targets = np.array([p.target for p in pairs], dtype=np.float64)
    return design, offsets, targets


def penalized_nll(pairs: Sequence[Pair], biases: dict[str, float], l2: float = 1.0) -> float:
    """The objective :func:`fit_calibration` minimises: ``sum_i NLL_i + l2 * sum_s b_s**2`` over the
    non-tie pairs, ``NLL_i = -log P(observed winner)``."""
    used = [p for p in pairs if not p.is_tie]
    margins = np.array([(p.score_a - biases.get(p.system_a, 0.0)) - (p.score_b - biases.get(p.system_b, 0.0))
                        for p in used])
    signs = np.array([1.0 if p.winner == "A" else -1.0 for p in used])
    return float(np.logaddexp(0.0, -signs * margins).sum() + l2 * sum(b * b for b in biases.values()))


def fit_calibration(pairs: Sequence[Pair], l2: float = 1.0, pin: str | None = None, *,
                    max_iterations: int = 100, tolerance: float = 1e-9) -> Calibration:
    """Fit one additive bias per system from anchor pairs holding scores and systems.

    Minimises ``sum_i NLL_i + l2 * sum_s b_s**2`` (``NLL_i = -log P(observed winner of pair i)`` with
    ``P(A wins) = sigmoid((r_A - b_A) - (r_B - b_B))``; lambda = ``l2`` = 1.0 on the summed, not the
    mean, loss, as published) by Newton's method with the analytic gradient
    ``X^T (y - p) + 2 l2 b`` and Hessian ``X^T diag(p (1 - p)) X + 2 l2 I`` and a backtracking line
    search, until every gradient entry is below ``tolerance * (1 + K)``. Ties are excluded and counted.
    ``pin``: a system held at ``b = 0``; if it does not appear in the non-tie pairs a
    :class:`PinMissingWarning` is issued (``pin_missing`` is set, its bias is reported as 0 and nothing
    else is constrained). With no non-tie pair every bias is 0 (uncalibrated) and no warning is given.
    """
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    # 1. Check the pairs, split off ties.
    for pair in pairs:
        if not pair.has_scores or pair.system_a is None or pair.system_b is None:
            raise PairsError(f"{pair.where}: calibration needs score_a, score_b, system_a and system_b")
    used = [p for p in pairs if not p.is_tie]
    ties = len(pairs) - len(used)
    systems = sorted({p.system_a for p in pairs} | {p.system_b for p in pairs})
    # 2. The pin.
    # (with no non-tie pair nothing is fitted, so nothing needs pinning)
    pin_missing = bool(used) and pin is not None and pin not in {p.system_a for p in used} | {p.system_b for p in used}
    if pin_missing:
        warnings.warn(f"pinned system {pin!r} does not appear in the {len(used)} non-tie anchor pair(s); "
                      "no system is effectively pinned (its bias is reported as 0)", PinMissingWarning,
                      stacklevel=2)
    free = [s for s in systems if s != pin]
    biases = np.zeros(len(free))
    iterations, converged, objective = 0, True, 0.0
    if used and free:
        # 3. Newton's method on the convex penalised log-likelihood.
        design, offsets, targets = _design(used, systems)
        design = design[:, [systems.index(s) for s in free]]  # the pinned column is dropped (b = 0)
        ridge = 2.0 * l2 * np.eye(len(free)) + (1e-12 * np.eye(len(free)) if l2 == 0 else 0.0)

        def evaluate(b: np.ndarray) -> float:
            margins = offsets - design @ b
            signs = 2.0 * targets - 1.0
            return float(np.logaddexp(0.0, -signs * margins).sum() + l2 * b @ b)

        objective, converged = evaluate(biases), False
        while iterations < max_iterations:
            iterations += 1
            probs = _sigmoid(offsets - design @ biases)
            gradient = design.T @ (targets - probs) + 2.0 * l2 * biases
            if np.max(np.abs(gradient)) <= tolerance * (1 + len(used)):
                converged = True
                break
            hessian = (design.T * (probs * (1.0 - probs))) @ design + ridge
            step = np.linalg.solve(hessian, gradient)
            scale = 1.0
            while True:  # backtracking (Armijo); a full Newton step is almost always taken
                candidate = biases - scale * step
                value = evaluate(candidate)
                if value <= objective - 1e-4 * scale * (gradient @ step) or scale < 1e-10:
                    break
                scale *= 0.5
            biases, objective = candidate, value
        if not converged:
            logger.warning("calibration did not converge in %d Newton steps (l2=%s; separable data needs "
                           "l2 > 0)", max_iterations, l2)
    fitted = {s: float(b) for s, b in zip(free, biases)}
    if pin is not None:
        fitted[pin] = 0.0
    return Calibration(biases=dict(sorted(fitted.items())), pinned=pin, pin_missing=pin_missing, l2=float(l2),
                       pairs=len(used), ties=ties, iterations=iterations, converged=converged,
                       objective=objective)


def agreement(pairs: Sequence[Pair], calibration: Calibration | None = None) -> tuple[float, int]:
    """``(fraction, n)``: how often the calibrated margin's sign matches the human winner on the
    non-tie pairs (margin > 0 predicts A, otherwise B). A system without a bias (absent from the
    anchors) gets bias 0; ``calibration=None`` is the uncalibrated reward. NaN when no pair is usable."""
    calibration = calibration or Calibration(biases={})
    used = [p for p in pairs if not p.is_tie]
    if not used:
        return float("nan"), 0
    hits = sum((calibration.margin(p) > 0) == (p.winner == "A") for p in used)
    return hits / len(used), len(used)


# -- the K-sweep experiment ------------------------------------------------------------------------
def k_sweep(pairs: Sequence[Pair], ks: Sequence[int], seeds: int = 5, pool: int = 299, test: int = 299,
            l2: float = 1.0, pin: str | None = None) -> dict:
    """The published anchor-budget experiment.

    For each seed ``s`` in ``0..seeds-1``: the rows in file order are shuffled with
    ``random.Random(s).shuffle``; the first ``pool`` rows are the anchor pool, the next ``test`` rows
    the test split; for each K the biases are fitted on ``pool[:K]`` (ties excluded) and the agreement
    (calibrated margin > 0 vs the human winner, non-tie pairs) is measured on the test split.
    Returns ``{"k": [{"k", "mean", "std" (population), "per_seed", "pin_missing"}], "uncalibrated":
    {"mean", "std", "per_seed"}, ...}``; ``pin_missing`` counts the seeds whose ``pool[:K]`` lacks the
    pinned system (one :class:`PinMissingWarning` sums them up).
    """
    ks = list(dict.fromkeys(int(k) for k in ks))
    if seeds < 1 or pool < 0 or test < 1:
        raise ValueError("seeds and test must be >= 1, pool >= 0")
    if pool + test > len(pairs):
        raise ValueError(f"pool {pool} + test {test} exceeds the {len(pairs)} pairs in the file")
    bad = [k for k in ks if k < 0 or k > pool]
    if bad:
        raise ValueError(f"K values {bad} are outside 0..pool ({pool})")
    per_k: dict[int, list[float]] = {k: [] for k in ks}
    pin_missing = {k: 0 for k in ks}
    uncalibrated = []
    for seed in range(seeds):
        rows = list(pairs)
        random.Random(seed).shuffle(rows)
        anchors, held_out = rows[:pool], rows[pool:pool + test]
        uncalibrated.append(agreement(held_out)[0])
        for k in ks:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", PinMissingWarning)
                fit = fit_calibration(anchors[:k], l2=l2, pin=pin)
            pin_missing[k] += int(fit.pin_missing)
            for warning in caught:
                if not issubclass(warning.category, PinMissingWarning):
                    warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
            per_k[k].append(agreement(held_out, fit)[0])

    missing = sum(pin_missing.values())
    if missing:
        warnings.warn(f"pinned system {pin!r} is absent from the anchors in {missing} of {len(ks) * seeds} fit(s) "
                      "(counted per K in 'pin_missing')", PinMissingWarning, stacklevel=2)

    def summary(values: list[float]) -> dict:
        return {"mean": float(np.mean(values)), "std": float(np.std(values)), "per_seed": values}

    return {"k": [{"k": k, **summary(per_k[k]), "pin_missing": pin_missing[k]} for k in ks],
            "uncalibrated": summary(uncalibrated), "seeds": seeds, "pool": pool, "test": test, "l2": l2,
            "pin": pin}
