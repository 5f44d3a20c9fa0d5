"""The shipped release-score quantile table and the script that derives it."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tunejury_align.reward.percentiles import percentile, percentiles, release_table

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_MEANS = {"mtg_jamendo": 0.515, "fma_large": -0.596, "mtat": -0.548, "openmic": -0.988,
                   "midicaps": -0.110, "musiccaps": -0.449, "song_describer": 1.179}
PUBLISHED_COUNTS = {"mtg_jamendo": 55_701, "fma_large": 106_401, "mtat": 25_860, "openmic": 20_000,
                    "midicaps": 5_000, "musiccaps": 5_352, "song_describer": 706}


def test_table_matches_the_published_summary():
    collections = release_table()["collections"]
    assert set(collections) == set(PUBLISHED_MEANS)
    for key, entry in collections.items():
        assert entry["n"] == PUBLISHED_COUNTS[key]
        assert abs(entry["mean"] - PUBLISHED_MEANS[key]) < 6e-4
        assert np.all(np.diff(entry["quantiles"]) >= 0)


def test_percentile_inverts_the_quantiles():
    table = release_table()
    quantiles = table["collections"]["fma_large"]["quantiles"]
    for level in (10.0, 50.0, 90.0):
        k = table["levels"].index(level)
        assert percentile(quantiles[k], "fma_large") == pytest.approx(level, abs=0.5)
    assert percentile(-100.0, "mtat") == 0.0 and percentile(100.0, "mtat") == 100.0
    values = [percentiles(s)["openmic"] for s in np.linspace(-5, 5, 41)]
    assert values == sorted(values)


def test_build_script_on_synthetic_scores(tmp_path):
    from importlib import util

    spec = util.spec_from_file_location("build", ROOT / "scripts" / "build_release_quantiles.py")
    build = util.module_from_spec(spec)
    spec.loader.exec_module(build)
    rng = np.random.default_rng(0)
    source = tmp_path / "scores"
    source.mkdir()
    data = {}
    for key, (_, filename) in build.COLLECTIONS.items():
        scores = rng.normal(size=101)
        data[key] = scores
        lines = ["track_id,reward_score,extra"] + [f"t{i},{s!r},\"a, b\"" for i, s in enumerate(scores)]
        (source / filename).write_text("\n".join(lines) + "\n")
    out = tmp_path / "table.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_release_quantiles.py"), str(source), str(out)],
                   check=True)
    import json

    table = json.loads(out.read_text())
    for key, scores in data.items():
        entry = table["collections"][key]
        assert entry["n"] == 101
        assert entry["quantiles"][100] == pytest.approx(np.median(scores), abs=1e-4)
        assert entry["quantiles"][0] == pytest.approx(scores.min(), abs=1e-4)
