"""Derive the small quantile table shipped with the package from the published score CSVs.

    python scripts/build_release_quantiles.py ../shared/data/release_scores \
        tunejury_align/reward/data/release_quantiles.json

Each collection keeps n, mean, std and the 0.0, 0.5, ..., 100.0 percentiles (201 values) of its
``reward_score`` column (empty-prompt release protocol); percentiles are interpolated from them.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

COLLECTIONS = {
    "mtg_jamendo": ("MTG-Jamendo", "mtg_jamendo_scores_rescored.csv"),
    "fma_large": ("FMA-Large", "fma_large_scores_rescored.csv"),
    "mtat": ("MagnaTagATune", "mtat_scores.csv"),
    "openmic": ("OpenMIC", "openmic_scores.csv"),
    "midicaps": ("MidiCaps", "midicaps_scores.csv"),
    "musiccaps": ("MusicCaps", "musiccaps_scores.csv"),
    "song_describer": ("Song Describer", "sdd_scores.csv"),
}
LEVELS = np.linspace(0.0, 100.0, 201)


def read_scores(path: Path) -> np.ndarray:
    with path.open(newline="") as handle:
        return np.array([float(row["reward_score"]) for row in csv.DictReader(handle)], dtype=np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="folder with the release score CSVs")
    parser.add_argument("output", type=Path, help="JSON table to write")
    args = parser.parse_args()
    table = {"levels": [round(float(x), 1) for x in LEVELS], "collections": {}}
    for key, (name, filename) in COLLECTIONS.items():
        scores = read_scores(args.source / filename)
        table["collections"][key] = {
            "name": name,
            "n": int(scores.size),
            "mean": round(float(scores.mean()), 4),
            "std": round(float(scores.std()), 4),
            "quantiles": [round(float(q), 4) for q in np.percentile(scores, LEVELS)],
        }
    args.output.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
