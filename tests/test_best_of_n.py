"""Best-of-N: the recipe, the curve, the CLI run folder (resume after SIGKILL, 2 processes), configs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch

from tunejury_align.cli import main
from tunejury_align.config import ConfigError, load_config
from tunejury_align.recipes.best_of_n import BestOfNConfig, best_of_n, best_of_n_curve, curve_points

ROOT = Path(__file__).resolve().parents[1]
DEBUG_ARGS = ["--config", str(ROOT / "recipes/debug/best_of_n.yaml"), "--generator", "debug", "--reward", "debug",
              "--prompt", "lofi hip hop beat", "epic orchestral soundtrack", "jazz trio"]


def toy_generate(prompts, seeds):
    """Seeded tones: frequency and level from the seed; a pure function of (prompt, seed)."""
    clips = []
    for _prompt, seed in zip(prompts, seeds):
        g = torch.Generator().manual_seed(seed)
        t = torch.arange(8000) / 8000
        level, freq = torch.rand(1, generator=g), 200 + 600 * torch.rand(1, generator=g)
        clips.append((level * torch.sin(2 * torch.pi * freq * t)).unsqueeze(0))
    return torch.stack(clips)


def loudness_reward(audio, sample_rate, prompts):
    return audio.pow(2).mean(dim=(1, 2))


def test_curve_is_the_expected_best_over_all_subsets_and_non_decreasing():
    scores = np.array([[0.1, 0.5, 0.2, 0.9, 0.3], [1.0, 0.0, 0.0, 0.0, 2.0]])
    truths = np.array([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    curve = best_of_n_curve(scores, bootstrap=200, seed=0)
    truth_curve = best_of_n_curve(scores, bootstrap=0, values=truths)
    assert [p["n"] for p in curve] == [1, 2, 4, 5] == curve_points(5)
    for point, truth_point in zip(curve, truth_curve):  # brute force: every k-subset, argmax (first of ties)
        picks = [[row[list(s)[int(np.argmax(scores[r, list(s)]))]] for s in combinations(range(5), point["n"])]
                 for r, row in enumerate(scores)]
        assert point["mean"] == pytest.approx(np.mean([np.mean(p) for p in picks]))
        chosen = [[truths[r, list(s)[int(np.argmax(scores[r, list(s)]))]] for s in combinations(range(5), point["n"])]
                  for r in range(2)]
        assert truth_point["mean"] == pytest.approx(np.mean([np.mean(c) for c in chosen]))
    assert curve[0]["mean"] == pytest.approx(scores.mean()) and curve[-1]["mean"] == pytest.approx(1.45)
    assert all(p["low"] <= p["mean"] <= p["high"] for p in curve)
    rng = np.random.default_rng(1)
    means = [p["mean"] for p in best_of_n_curve(rng.normal(size=(20, 32)), bootstrap=0)]
    assert means == sorted(means) and len(means) == 6


def test_library_best_of_n_with_a_plain_callable():
    config = BestOfNConfig(n=6, candidates_per_batch=4, prompt_prefix="", bootstrap=50)
    result = best_of_n(toy_generate, loudness_reward, ["a", "b"], config=config, sample_rate=8000)
    assert result.scores.shape == (2, 6)
    direct = loudness_reward(toy_generate(["a"] * 6, [42 + c for c in range(6)]), 8000, None).numpy()
    np.testing.assert_allclose(result.scores[0], direct, rtol=1e-6)
    assert result.winners[0] == int(np.argmax(direct))


def test_text_is_encoded_once_per_prompt(reward):
    calls = []
    original = reward.clap.embed_text

    def counting(prompts):
        calls.append(list(prompts))
        return original(prompts)

    reward._text_cache.clear()
    reward.clap.embed_text = counting  # instance attribute on our own object, restored below
    try:
        config = BestOfNConfig(n=4, candidates_per_batch=2, prompt_prefix="", bootstrap=0)
        best_of_n(toy_generate, reward, ["alpha", "beta"], config=config, sample_rate=8000)
    finally:
        del reward.clap.embed_text
    assert sorted(p for call in calls for p in call) == ["alpha", "beta"]


def test_every_shipped_yaml_parses():
    files = sorted((ROOT / "recipes").rglob("best_of_n.yaml"))
    assert files
    for path in files:
        config = load_config(BestOfNConfig, path)
        assert config.n >= 1
        assert path.read_text().lstrip().startswith("#") and "align best-of-n" in path.read_text()


def test_config_precedence_and_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("n: 8\ngeneration:\n  duration: 3.0\n")
    config = load_config(BestOfNConfig, path, ["generation.top_k=50", "n=16"], n=4)
    assert config.n == 16 and config.generation == {"duration": 3.0, "top_k": 50}
    assert load_config(BestOfNConfig, path, [], n=4).n == 4  # flags beat YAML
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['nn'\]"):
        load_config(BestOfNConfig, None, ["nn=3"])


def run_cli(out, *extra):
    return main(["best-of-n", *DEBUG_ARGS, "--out", str(out), *extra])


# Runs compared byte for byte use one thread per process (what `accelerate launch` gives each process),
# so that float reductions happen in the same order in every run.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
RUN_ARGS = [*DEBUG_ARGS, "--n", "6", "candidates_per_batch=2"]


def cli_subprocess(out, *prefix):
    command = [*prefix] or [sys.executable, "-m"]
    return command + ["tunejury_align", "best-of-n", *RUN_ARGS, "--out", str(out)]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    result = subprocess.run(cli_subprocess(out), env=ONE_THREAD, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_cli_run_in_process(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["best-of-n", "--n", "4", "--generator", "debug", "--reward", "debug", "--prompt", "lofi hip hop",
                 "epic orchestral", "generation.duration=1.0", "--out", str(out)]) == 0
    assert "debug world" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 8 and [r["candidate"] for r in records[:4]] == list(range(4))
    assert [r["seed"] for r in records[:4]] == [42, 43, 44, 45]
    for p in range(2):
        rows = [r for r in records if r["prompt_index"] == p]
        winner = max(rows, key=lambda r: r["score"])
        expected = f"candidates/p{p:04d}_c00.wav" if winner["candidate"] == 0 else f"winners/p{p:04d}.wav"
        assert winner["winner"] and winner["path"] == expected
        assert sum(r["winner"] for r in rows) == 1
        assert (out / winner["path"]).is_file() and (out / f"winners/p{p:04d}.wav").is_file()
        assert rows[0]["path"] == f"candidates/p{p:04d}_c00.wav" and (out / rows[0]["path"]).is_file()
    assert records[0]["generator"]["debug"] and records[0]["reward"]["debug"]
    curve = json.loads((out / "curve.json").read_text())
    means = [p["mean"] for p in curve["curve"]]
    assert [p["n"] for p in curve["curve"]] == [1, 2, 4] and means == sorted(means)
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["generation"] == {"duration": 1.0} and meta["prompts"] == ["lofi hip hop", "epic orchestral"]


def test_rerun_is_a_no_op_and_changed_settings_are_refused(reference_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(reference_run, copy)
    before = (copy / "results.jsonl").read_bytes()
    assert main(["best-of-n", *RUN_ARGS, "--out", str(copy)]) == 0
    assert (copy / "results.jsonl").read_bytes() == before
    assert main(["best-of-n", *DEBUG_ARGS, "--n", "8", "candidates_per_batch=2", "--out", str(copy)]) == 2
    assert "config.n: 6 -> 8" in capsys.readouterr().err


def test_resume_after_sigkill_gives_identical_results(reference_run, tmp_path):
    out = tmp_path / "killed"
    process = subprocess.Popen(cli_subprocess(out), env=ONE_THREAD, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    log = out / ".progress" / "rank0.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(log.read_text().splitlines())
    assert 2 <= finished < 9, "the run should have been killed mid-way"
    assert not (out / "results.jsonl").exists()
    resumed = subprocess.run(cli_subprocess(out), env=ONE_THREAD, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "results.jsonl").read_bytes() == (reference_run / "results.jsonl").read_bytes()
    for p in range(3):
        name = f"winners/p{p:04d}.wav"
        assert (out / name).read_bytes() == (reference_run / name).read_bytes()


def test_two_processes_give_the_same_results(reference_run, tmp_path):
    out = tmp_path / "two"
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m"]
    result = subprocess.run(cli_subprocess(out, *launch) + ["--device", "cpu"], env=ONE_THREAD,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (out / ".progress").iterdir()) == ["rank0.jsonl", "rank1.jsonl"]
    assert (out / "results.jsonl").read_bytes() == (reference_run / "results.jsonl").read_bytes()


@pytest.mark.parametrize("extra, message", [
    (["--prompts", "/nonexistent/prompts.txt"], "prompts file .* not found"),
    (["nonsense_key=1"], r"unknown config key\(s\) \['nonsense_key'\]"),
    (["generation.durration=3"], "bad generation option .*durration"),
    (["--generator", "TuneJury/no-such-generator"], "no-such-generator"),
])
def test_bad_inputs_fail_before_any_generation(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    args = ["best-of-n", "--generator", "debug", "--reward", "debug", "--out", str(out), "--n", "2"]
    if not any(e.startswith("--prompts") for e in extra):
        args += ["--prompt", "x"]
    assert main(args + extra) == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not (out / ".progress").exists()


def test_empty_prompts_file_is_refused(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("# only a comment\n\n")
    assert main(["best-of-n", "--generator", "debug", "--reward", "debug", "--prompts", str(prompts),
                 "--out", str(tmp_path / "o")]) == 2
    assert "holds no prompts" in capsys.readouterr().err
