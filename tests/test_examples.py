"""Every script in examples/ runs on the debug models."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script, args, expected", [
    ("rerank_your_outputs.py", ["--reward", "debug", "--n", "3"], "best candidate"),
    ("best_of_n_your_generate.py", ["--reward", "debug", "--n", "4"], "N=4: mean best reward"),
    ("make_demo_audio.py", ["{tmp}/demo"], "wrote 3 clips"),
    ("ditto_with_your_pipeline.py", [], "reward"),
    ("library_quickstart.py", [], "expert iteration: held-out reward per round"),
])
def test_example_runs(script, args, expected, tmp_path):
    args = [a.format(tmp=tmp_path) for a in args]
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout
