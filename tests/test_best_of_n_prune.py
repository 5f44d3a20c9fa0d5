"""Early-pruned best-of-N for MusicGen: survivors are byte-identical to the unpruned run's candidates, the
weakest prefixes stop, and the compute is counted."""

import numpy as np
import pytest
import torch

from tunejury_align.generators import load_generator
from tunejury_align.recipes.best_of_n import BestOfNConfig, best_of_n
from tunejury_align.recipes.best_of_n_prune import keep_streams, prune_prompt

PROMPT = "lofi hip hop beat"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def level(audio, sample_rate, prompts):
    """Level in dB of the clip's second half (or of the whole prefix): prefix scores predict it imperfectly."""
    return 10 * torch.log10(audio.pow(2).mean(dim=(1, 2)) + 1e-12)


def test_keep_streams_keeps_the_best_fraction_and_the_margin():
    scores = np.array([0.1, 0.9, 0.5, 0.85, 0.2])
    assert keep_streams([0, 1, 2, 3, 4], scores, 0.4, None) == [1, 3]
    assert keep_streams([0, 1, 2, 3, 4], scores, 0.2, 0.06) == [1, 3]
    assert keep_streams([0, 1, 2, 3, 4], scores, 0.01, None) == [1]
    assert keep_streams([5, 6], np.array([0.3, 0.3]), 0.5, None) == [5]  # ties: the earlier candidate


def test_survivors_are_byte_identical_to_the_unpruned_candidates():
    generator = load_generator("debug-musicgen")
    config = BestOfNConfig(n=8, candidates_per_batch=8, bootstrap=0, generation={"duration": 0.6},
                           prune=True, prune_at=[0.25, 0.5], prune_keep=0.5)
    pruned = prune_prompt(generator, level, PROMPT, 0, config)
    full = generator.generate([PROMPT] * 8, list(range(42, 50)), duration=0.6)
    survivors = sorted(pruned.survivor_audio)
    assert len(survivors) == 2 and [len(s["candidates"]) for s in pruned.stages] == [8, 4]
    for c in survivors:
        assert pruned.survivor_audio[c].numpy().tobytes() == full[c].numpy().tobytes()
    # the stages stopped the lowest prefix scores
    first = pruned.stages[0]
    assert set(pruned.stages[1]["candidates"]) == set(np.argsort(first["scores"])[::-1][:4].tolist())
    # the unpruned run's scores of the survivors, and its winner when it survived
    unpruned = best_of_n(generator, level, [PROMPT], config=BestOfNConfig(n=8, bootstrap=0,
                                                                          generation={"duration": 0.6}))
    np.testing.assert_allclose(pruned.scores[survivors], unpruned.scores[0][survivors], rtol=0, atol=1e-6)
    if unpruned.winners[0] in survivors:
        assert pruned.winner == unpruned.winners[0]
    # compute: 8 streams to 0.15 s, 4 to 0.3 s, 2 to 0.6 s (50 frames/s plus the 3-step delay pattern)
    tokens = lambda seconds: round(seconds * 50) + 3  # noqa: E731
    assert pruned.compute.generator_passes == 8 * tokens(0.15) + 4 * tokens(0.3) + 2 * tokens(0.6)
    assert pruned.full_passes == 8 * tokens(0.6) and pruned.compute.reward_calls == 8 + 4 + 2


def test_cli_pruned_run_and_compare_against_the_full_run(tmp_path, capsys):
    import json

    from tunejury_align.cli import main

    common = ["--generator", "debug", "--reward", "debug", "--n", "8", "--prompt", "lofi hip hop beat", "jazz trio",
              "generation.duration=0.6", "candidates_per_batch=8"]
    assert main(["best-of-n", *common, "--out", str(tmp_path / "full")]) == 0
    assert main(["best-of-n", "--prune", *common, "prune_at=[0.5]", "prune_keep=0.25",
                 "--out", str(tmp_path / "pruned")]) == 0
    assert "x the unpruned run's" in capsys.readouterr().out
    assert "Early-pruned best-of-N" in (tmp_path / "pruned" / "report.html").read_text()
    summary = json.loads((tmp_path / "pruned" / "summary.json").read_text())
    tokens = lambda seconds: round(seconds * 50) + 3  # noqa: E731
    assert summary["compute"]["generator_passes"] == 2 * (8 * tokens(0.3) + 2 * tokens(0.6))
    assert summary["compute_ratio"] == pytest.approx(summary["compute"]["generator_passes"] / (2 * 8 * tokens(0.6)))
    full_rows = [json.loads(line) for line in (tmp_path / "full" / "results.jsonl").read_text().splitlines()]
    pruned_rows = [json.loads(line) for line in (tmp_path / "pruned" / "results.jsonl").read_text().splitlines()]
    for full, pruned in zip(full_rows, pruned_rows):
        assert (full["prompt_index"], full["candidate"]) == (pruned["prompt_index"], pruned["candidate"])
        if pruned["score"] is not None:  # a survivor: the unpruned candidate's score (same audio)
            assert pruned["score"] == pytest.approx(full["score"], abs=1e-6) and pruned["pruned_at_seconds"] is None
        else:
            assert pruned["pruned_at_seconds"] == pytest.approx(0.3)
    assert main(["compare", str(tmp_path / "full"), str(tmp_path / "pruned"), "--out", str(tmp_path / "cmp.html")]) == 0
    result = json.loads((tmp_path / "cmp.json").read_text())
    full, pruned = result["runs"]
    assert pruned["compute"]["generator_passes"] < full["compute"]["generator_passes"]
    assert pruned["reward"]["mean"] <= full["reward"]["mean"] + 1e-6  # the pruned winner is one of the candidates
    assert {"mean", "low", "high"} <= set(full["truth"]) and "<svg" in (tmp_path / "cmp.html").read_text()
