"""The README's library snippets run as written (on the debug models) and do what they say."""

import re
from pathlib import Path

import pytest
import torch

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SNIPPETS = dict(re.findall(r"<!-- snippet: ([\w-]+) -->\n```python\n(.*?)```", README, flags=re.S))


def test_the_readme_has_the_recipe_snippets():
    assert set(SNIPPETS) == {"best-of-n", "ditto", "expert-iteration", "debug-world"}
    for name, code in SNIPPETS.items():
        lines = [line for line in code.strip().splitlines() if line.strip()]
        assert len(lines) <= 6, f"{name}: {len(lines)} lines, the README promises about five"


@pytest.mark.parametrize("name", ["best-of-n", "ditto", "expert-iteration", "debug-world"])
def test_readme_snippet_runs(name, capsys):
    scope: dict = {}
    exec(compile(SNIPPETS[name], f"README snippet {name}", "exec"), scope)
    if name == "best-of-n":
        result, winner = scope["result"], scope["winner"]
        assert winner.ndim == 2 and winner.shape[-1] > 0
        again = scope["generator"].generate(["calm solo piano"] * 4, [42, 43, 44, 45])[result.winners[0]]
        torch.testing.assert_close(winner, again, atol=0, rtol=0)  # the winner's own audio, as generated
        assert result.winner_scores[0] == result.scores[0].max()
    elif name == "ditto":
        result = scope["result"]
        assert result.optimised_reward >= result.baseline_reward and len(result.history) == 3
        assert "->" in capsys.readouterr().out
    elif name == "debug-world":
        result = scope["result"]
        assert [p["n"] for p in result.extra_curves["truth"]] == [1, 2, 4, 8, 16]
        assert result.extra_scores["truth"].shape == (1, 16)
        pick = result.extra_scores["truth"][0, result.winners[0]]
        assert result.extra_curves["truth"][-1]["mean"] == pytest.approx(pick)
        assert "'n': 16" in capsys.readouterr().out
    else:
        rounds = scope["rounds"]
        assert [r["round"] for r in rounds] == [0, 1] and rounds[1]["kept"] >= 1
