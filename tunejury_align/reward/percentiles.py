"""Where a score stands among the published TuneJury scores of seven music collections.

The table (``data/release_quantiles.json``) is derived from the published score CSVs by
``scripts/build_release_quantiles.py``. The published scores use the empty prompt and the release
protocol, so percentiles are most meaningful for scores computed the same way.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np


@lru_cache(maxsize=1)
def release_table() -> dict:
    return json.loads(resources.files(__package__).joinpath("data/release_quantiles.json").read_text())


def collection_names() -> dict[str, str]:
    """Short key -> display name, in the table's order."""
    return {key: c["name"] for key, c in release_table()["collections"].items()}


def percentile(score: float, collection: str) -> float:
    """Percentage (0-100) of the collection's published scores below ``score`` (interpolated)."""
    table = release_table()
    entry = table["collections"][collection]
    quantiles = np.asarray(entry["quantiles"])
    levels = np.asarray(table["levels"])
    return float(np.interp(float(score), quantiles, levels, left=0.0, right=100.0))


def percentiles(score: float) -> dict[str, float]:
    """``{collection: percentile}`` for all seven published collections."""
    return {key: percentile(score, key) for key in release_table()["collections"]}
