"""Which candidate a reranking keeps: by the reward, by held-out judges, or by a lower confidence bound.

``select="reward"`` (default) keeps the candidate the optimised reward scores highest. With judges
(:mod:`tunejury_align.reward.judges`), two choices that are harder to game:

* ``"judges-mean"``: the highest mean score of the judges (the reward left out);
* ``"lcb"``: the highest lower confidence bound over the reward and the judges together,
  ``mean - lcb_k * std`` of the ``1 + J`` heads' scores of the candidate (population std): a candidate
  only one head loves is pushed down by the others' disagreement.

The heads are TuneJury heads of one family (trained on the same kind of votes), so their raw scores
share a scale and are averaged as they are. Ties go to the earlier candidate (as ``argmax``).
"""

from __future__ import annotations

import numpy as np

from ..reward.judges import judge_names

SELECT_MODES = ("reward", "judges-mean", "lcb")


def check_select(select: str, lcb_k: float) -> None:
    if select not in SELECT_MODES:
        raise ValueError(f"select must be one of {SELECT_MODES}, got {select!r}")
    if lcb_k < 0:
        raise ValueError(f"lcb_k must be >= 0, got {lcb_k}")


def selection_values(scores: np.ndarray, extras: dict[str, np.ndarray], select: str = "reward",
                     lcb_k: float = 1.0) -> np.ndarray:
    """The values a selection ranks by, the shape of ``scores`` (``(n,)`` or ``(P, n)``); ``extras`` holds the
    judges' scores (``judge_<name>`` entries, same shape; other entries, e.g. the debug world's truth, are
    ignored). Raises ``ValueError`` when ``select`` needs judges and there are none."""
    check_select(select, lcb_k)
    if select == "reward":
        return np.asarray(scores, dtype=np.float64)
    names = judge_names(extras)
    if not names:
        raise ValueError(f"select={select!r} needs held-out judges (--judges); none were given")
    judges = np.stack([np.asarray(extras[n], dtype=np.float64) for n in names])  # (J, ...)
    if select == "judges-mean":
        return judges.mean(axis=0)
    heads = np.concatenate([np.asarray(scores, dtype=np.float64)[None], judges])  # (1 + J, ...)
    return heads.mean(axis=0) - lcb_k * heads.std(axis=0)


def select_winners(scores: np.ndarray, extras: dict[str, np.ndarray], select: str = "reward",
                   lcb_k: float = 1.0) -> list[int]:
    """Each prompt's kept candidate (``scores`` ``(P, n)``); ``-1`` where a prompt has a missing value."""
    values = selection_values(scores, extras, select, lcb_k)
    return [int(np.argmax(row)) if not np.isnan(row).any() else -1 for row in values]
