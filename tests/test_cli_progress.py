"""Long commands say what will run, and report progress on stderr when it is not a terminal (issue 12, case 11)."""

import io
import re

import pytest

from tunejury_align.cli import main, progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_lines_every_interval_when_not_on_a_terminal(monkeypatch):
    stream, clock = io.StringIO(), Clock()
    monkeypatch.setattr(progress, "INTERVAL_SECONDS", 30.0)
    with progress.Progress("best-of-n", total=10, unit="candidates", stream=stream, clock=clock) as bar:
        for _ in range(10):
            clock.now += 8.0
            bar.update(1)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("best-of-n: 4/10 candidates (40%)") and "32s elapsed" in lines[0] and "left" in lines[0]
    assert lines[1].startswith("best-of-n: 8/10 candidates (80%)")
    assert lines[-1].startswith("best-of-n: 10/10 candidates (100%)") and "done in 1m20s" in lines[-1]
    assert len(lines) == 3
    silent = io.StringIO()
    with progress.Progress("x", total=3, unit="items", stream=silent, enabled=False) as bar:
        bar.update(3)
    assert silent.getvalue() == ""


def test_best_of_n_says_what_will_run_and_reports_progress(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL_SECONDS", 0.0)
    assert main(["best-of-n", "--generator", "debug", "--reward", "debug", "--n", "4", "--out", str(tmp_path / "run"),
                 "--prompt", "a", "b", "generation.duration=0.5", "candidates_per_batch=2"]) == 0
    err = capsys.readouterr().err
    assert "best-of-n: 2 prompt(s) x 4 candidate(s) = 8 generations" in err
    assert re.search(r"best-of-n: 4/8 candidates \(50%\)", err) and "best-of-n: 8/8 candidates (100%)" in err


def test_expert_iteration_on_debug_models_says_it_runs_the_papers_steps(tmp_path, capsys, monkeypatch):
    from tunejury_align.cli import expert_iter

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(expert_iter, "load_models", stop)
    assert main(["expert-iter", "--generator", "debug", "--reward", "debug", "--out", str(tmp_path / "run"),
                 "--prompt", *[f"p{i}" for i in range(10)]]) == 130
    err = capsys.readouterr().err
    assert "1 round(s)" in err and "9 training prompt(s) x 9 samples" in err and "5000 training steps" in err
    assert "1 held-out prompt(s) x 4 samples" in err and "recipes/debug/expert_iter.yaml" in err


@pytest.mark.parametrize("command, expected", [
    ("ditto", "ditto: 2 prompt(s) x 71 iterates (baseline + 70 iterations), 20 sampler steps each"),
])
def test_ditto_says_what_will_run(tmp_path, capsys, monkeypatch, command, expected):
    from tunejury_align.cli import ditto

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ditto, "load_models", stop)
    assert main([command, "--generator", "debug", "--reward", "debug", "--out", str(tmp_path / "run"),
                 "--prompt", "a", "b"]) == 130
    assert expected in capsys.readouterr().err
