"""Metrics for reward evaluation (accuracy, calibration, rank correlation) and for distributions of
embeddings (Frechet distance, diversity)."""

from __future__ import annotations

import numpy as np


def spearman(a, b) -> float:
    """Spearman rank correlation with average ranks for ties (scipy's ``spearmanr``); NaN when either
    side is constant."""
    import warnings

    from scipy.stats import ConstantInputWarning, spearmanr

    if len(a) != len(b) or len(a) < 2:
        raise ValueError("spearman needs two sequences of the same length >= 2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return float(spearmanr(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)).statistic)


def pairwise_accuracy(margins, a_wins) -> tuple[float, int]:
    """``(accuracy, n)`` over non-tie pairs: ``margins (N,)`` = ``s(A) - s(B)``, ``a_wins (N,)`` bool.

    ``margin > 0`` predicts A, anything else B. Leave ties out before calling. NaN for ``n = 0``.
    """
    margins, a_wins = np.asarray(margins, dtype=np.float64), np.asarray(a_wins, dtype=bool)
    if margins.shape != a_wins.shape:
        raise ValueError(f"margins {margins.shape} and a_wins {a_wins.shape} differ in shape")
    if len(margins) == 0:
        return float("nan"), 0
    return float(((margins > 0) == a_wins).mean()), int(len(margins))


def expected_calibration_error(margins, a_wins, bins: int = 10) -> tuple[float, list[dict]]:
    """ECE of the pairwise predictions as published for TuneJury (Kim et al., 2026).

    The non-tie pairs are sorted by ``|margin|`` (stable sort) and cut into ``bins`` equal-count bins
    (``numpy.array_split``: sizes differ by at most one, the larger bins first; empty bins, when there
    are fewer pairs than bins, are dropped). In a bin, confidence is the mean of ``sigmoid(|margin|)``
    and accuracy the fraction of pairs whose predicted winner (``margin > 0`` -> A) is right;
    ``ECE = sum_b (n_b / N) |confidence_b - accuracy_b|``. Returns ``(ece, bins)`` with each bin's
    ``count``, ``low``/``high`` (its ``|margin|`` range), ``confidence`` and ``accuracy``.
    """
    margins, a_wins = np.asarray(margins, dtype=np.float64), np.asarray(a_wins, dtype=bool)
    if margins.shape != a_wins.shape:
        raise ValueError(f"margins {margins.shape} and a_wins {a_wins.shape} differ in shape")
    if bins < 1:
        raise ValueError("bins must be >= 1")
    if len(margins) == 0:
        return float("nan"), []
    magnitude = np.abs(margins)
    confidence = 1.0 / (1.0 + np.exp(-magnitude))
    correct = (margins > 0) == a_wins
    order = np.argsort(magnitude, kind="mergesort")
    ece, table = 0.0, []
    for members in np.array_split(order, bins):
        if len(members) == 0:
            continue
        conf, acc = float(confidence[members].mean()), float(correct[members].mean())
        ece += len(members) / len(margins) * abs(conf - acc)
        table.append({"count": int(len(members)), "low": float(magnitude[members].min()),
                      "high": float(magnitude[members].max()), "confidence": conf, "accuracy": acc})
    return float(ece), table


# -- distributions of embeddings: fidelity and diversity -------------------------------------
def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between Gaussian fits of ``(N, D)`` and ``(M, D)`` embeddings (N, M >= 2):
    ``|mu_x - mu_y|^2 + tr(S_x) + tr(S_y) - 2 tr((S_x S_y)^(1/2))`` (the FAD/FID formula).

    ``S_x S_y`` is similar to the symmetric PSD matrix ``S_x^(1/2) S_y S_x^(1/2)``, so
    ``tr((S_x S_y)^(1/2))`` is the sum of the square roots of that matrix's eigenvalues: two
    ``eigh`` calls in float64 (negative round-off eigenvalues clipped to 0) instead of a
    non-symmetric ``sqrtm``. Few samples in many dimensions give rank-deficient covariances and a
    biased estimate: compare rounds only on the same evaluation set. (Kept rather than scipy's
    ``sqrtm``: on the non-symmetric product it returns complex round-off and NaN for singular inputs.)"""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("the Frechet distance needs at least 2 embeddings per set")
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    cov_x, cov_y = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    values, vectors = np.linalg.eigh(cov_x)
    sqrt_x = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = sqrt_x @ cov_y @ sqrt_x
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    distance = ((mean_x - mean_y) ** 2).sum() + np.trace(cov_x) + np.trace(cov_y) - 2 * trace_sqrt
    return float(max(distance, 0.0))


def unit_rows(embeddings) -> np.ndarray:
    """``embeddings`` (float64) scaled to unit length along the last axis (zero rows stay zero)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    return emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)


def pairwise_cosine_distances(embeddings: np.ndarray) -> np.ndarray:
    """``(P, E, D)`` -> ``(P,)``: each prompt's mean pairwise cosine distance ``1 - cos`` among its E >= 2
    samples (0 = identical samples)."""
    if np.shape(embeddings)[1] < 2:
        raise ValueError("diversity needs at least 2 samples per prompt")
    unit = unit_rows(embeddings)
    cosine = unit @ unit.transpose(0, 2, 1)  # (P, E, E)
    return (1.0 - cosine[:, ~np.eye(unit.shape[1], dtype=bool)]).mean(axis=1)


def pairwise_cosine_diversity(embeddings: np.ndarray) -> float:
    """``(P, E, D)`` embeddings of E samples for each of P prompts -> the mean over prompts of the mean
    pairwise cosine distance ``1 - cos`` among a prompt's samples (E >= 2; 0 = identical samples)."""
    return float(pairwise_cosine_distances(embeddings).mean())


def mean_interval(values, bootstrap: int = 1000, seed: int = 0) -> dict:
    """``{"mean", "low", "high"}``: the mean of ``values`` with a percentile bootstrap 95 % interval."""
    values = np.asarray(values, dtype=np.float64)
    means = values[np.random.default_rng(seed).integers(0, len(values), (bootstrap, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(values.mean()), "low": float(low), "high": float(high)}
