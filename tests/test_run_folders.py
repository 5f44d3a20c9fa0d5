"""Run folders under bad input (issue 12): torn and damaged logs, incomplete runs, the output folder,
a full disk, two runs on one folder, and refusals that say what changed."""

import copy
import errno
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tunejury_align import rundir
from tunejury_align.cli import main
from tunejury_align.rundir import (
    RunFileError,
    RunMismatchError,
    append_jsonl,
    prepare_run_dir,
    read_jsonl,
)

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["candidates_per_batch=2", "generation.duration=0.5", "bootstrap=10"]


def best_of_n_argv(out, *extra):
    return ["best-of-n", "--generator", "debug", "--reward", "debug", "--n", "4", "--out", str(out),
            "--prompt", "lofi hip hop", "jazz trio", *SETTINGS, *extra]


def results_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bon") / "run"
    assert main(best_of_n_argv(out)) == 0
    return out


@pytest.fixture()
def run_copy(finished_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(finished_run, out)
    return out


# -- 2. torn and damaged logs ----------------------------------------------------------------------
def test_a_torn_last_line_is_cut_before_the_next_append(tmp_path, caplog):
    log = tmp_path / "log.jsonl"
    append_jsonl(log, [{"a": 1}, {"a": 2}])
    with open(log, "a") as handle:
        handle.write('{"a": 3, "b')  # killed mid-write
    assert read_jsonl(log) == [{"a": 1}, {"a": 2}]
    with caplog.at_level(logging.WARNING, logger="tunejury_align.rundir"):
        append_jsonl(log, [{"a": 4}])
    assert "torn" in caplog.text and "log.jsonl" in caplog.text
    assert read_jsonl(log) == [{"a": 1}, {"a": 2}, {"a": 4}]
    with open(log, "a") as handle:
        handle.write('{"a": 5}')  # a whole record that only lost its newline is kept
    append_jsonl(log, [{"a": 6}])
    assert [r["a"] for r in read_jsonl(log)] == [1, 2, 4, 5, 6]


def test_an_unparsable_middle_line_is_an_error_naming_the_file_and_line(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"a": 1}\n{"a": 2, "b\n{"a": 3}\n')
    with pytest.raises(RunFileError, match=r"log\.jsonl, line 2: not valid JSON"):
        read_jsonl(log)
    log.write_text('{"a": 1}\n[1, 2]\n{"a": 3}\n')
    with pytest.raises(RunFileError, match=r"log\.jsonl, line 2: .*JSON object"):
        read_jsonl(log)


def test_a_run_torn_mid_unit_resumes_to_every_result(finished_run, run_copy):
    log = run_copy / ".progress" / "rank0.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    assert len(lines) == 4  # 2 prompts x 2 units of 2 candidates
    log.write_text("".join(lines[:2]) + lines[2][:25])  # killed while writing the third unit's record
    for name in ("results.jsonl", "curve.json"):
        (run_copy / name).unlink()
    assert main(best_of_n_argv(run_copy)) == 0
    assert len(read_jsonl(log)) == 4
    assert [r["score"] for r in results_of(run_copy)] == [r["score"] for r in results_of(finished_run)]
    assert (run_copy / "curve.json").read_text() == (finished_run / "curve.json").read_text()


def test_a_damaged_middle_line_is_named_by_the_run_and_the_report(run_copy, capsys):
    log = run_copy / ".progress" / "rank0.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0] + lines[1][:20] + lines[2] + lines[3])
    assert main(["report", str(run_copy)]) == 2
    assert "rank0.jsonl, line 2" in capsys.readouterr().err
    assert main(best_of_n_argv(run_copy)) == 2
    assert "rank0.jsonl, line 2" in capsys.readouterr().err


@pytest.mark.parametrize("index", [-1, 2, "0"])
def test_a_prompt_index_out_of_range_is_an_error(run_copy, capsys, index):
    log = run_copy / ".progress" / "rank0.jsonl"
    records = read_jsonl(log)
    records[1]["prompt_index"] = index  # -1 must never mean "the last prompt"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["report", str(run_copy)]) == 2
    err = capsys.readouterr().err
    assert "rank0.jsonl, line 2" in err and "'prompt_index' must be" in err and repr(index) in err
    assert main(best_of_n_argv(run_copy)) == 2
    assert "rank0.jsonl, line 2" in capsys.readouterr().err


def test_the_report_names_a_string_where_a_number_belongs(tmp_path, capsys):
    ditto = tmp_path / "ditto"
    ditto.mkdir()
    (ditto / "run.json").write_text(json.dumps({"command": "ditto", "prompts": ["a"], "config": {}}))
    record = {"prompt_index": 0, "iteration": 0, "reward": 0.1, "loss": -0.1, "noise_norm": 1.0, "seconds": 0.1,
              "peak_memory": 0, "start_memory": 0, "backward": True}
    (ditto / "ditto.jsonl").write_text(json.dumps(record) + "\n" + json.dumps({**record, "reward": "high"}) + "\n")
    assert main(["report", str(ditto)]) == 2
    err = capsys.readouterr().err
    assert "ditto.jsonl, line 2" in err and "'reward' must be a number, got 'high'" in err
    expert = tmp_path / "expert"
    expert.mkdir()
    (expert / "run.json").write_text(json.dumps({"command": "expert-iter", "prompts": {"train": ["a"], "heldout": []},
                                                 "config": {}}))
    row = {"round": 0, "eval_reward_mean": 0.1, "eval_reward_std": 0.0, "kept_fraction": None}
    (expert / "metrics.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "round": 1,
                                                                                "eval_reward_mean": "0.2"}) + "\n")
    assert main(["report", str(expert)]) == 2
    err = capsys.readouterr().err
    assert "metrics.jsonl, line 2" in err and "'eval_reward_mean' must be a number, got '0.2'" in err


def test_a_finished_best_of_n_run_checks_every_unit(tmp_path, capsys, monkeypatch):
    from tunejury_align.recipes import best_of_n_run

    original = best_of_n_run.log_unit

    def loses_one_record(folder, rank, prompt_index, candidates, *args, **kwargs):
        if (prompt_index, candidates[0]) != (1, 2):
            original(folder, rank, prompt_index, candidates, *args, **kwargs)

    monkeypatch.setattr(best_of_n_run, "log_unit", loses_one_record)
    out = tmp_path / "run"
    assert main(best_of_n_argv(out)) == 1
    err = capsys.readouterr().err
    assert "incomplete" in err and "2 of 8" in err and "prompt 1" in err and "rerun the same command" in err
    assert not (out / "results.jsonl").exists() and not (out / "curve.json").exists()
    monkeypatch.undo()
    assert main(best_of_n_argv(out)) == 0 and len(results_of(out)) == 8


def test_a_finished_ditto_run_checks_every_prompt(tmp_path, capsys, monkeypatch):
    from tunejury_align.recipes import ditto_run

    original = ditto_run.save_prompt

    def loses_the_marker(out, prompt_index, *args, **kwargs):
        summary = original(out, prompt_index, *args, **kwargs)
        if prompt_index == 1:
            (out / ditto_run.done_path(1)).unlink()
        return summary

    monkeypatch.setattr(ditto_run, "save_prompt", loses_the_marker)
    out = tmp_path / "run"
    argv = ["ditto", "--config", str(ROOT / "recipes/debug/ditto.yaml"), "--generator", "debug", "--reward", "debug",
            "--iterations", "1", "sampler_steps=2", "--out", str(out), "--prompt", "a", "b"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "incomplete" in err and "prompt 1" in err


# -- 4. the output folder, a full disk -------------------------------------------------------------
@pytest.fixture()
def no_model_loading(monkeypatch):
    from tunejury_align import generators

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the output folder was checked")

    monkeypatch.setattr(generators, "load_generator", refuse)


@pytest.mark.parametrize("command", ["best-of-n", "ditto", "expert-iter"])
def test_an_unusable_out_fails_before_any_model_loads(tmp_path, capsys, no_model_loading, command):
    afile = tmp_path / "a_file"
    afile.write_text("x")
    for out, message in ((afile, "is a file, not a folder"), (afile / "sub", "cannot create")):
        assert main([command, "--generator", "debug", "--reward", "debug", "--out", str(out), "--prompt", "x"]) == 2
        err = capsys.readouterr().err
        assert message in err and str(out) in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_fails_before_any_model_loads(tmp_path, capsys, no_model_loading):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert main(["best-of-n", "--generator", "debug", "--out", str(folder / "run"), "--prompt", "x"]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        folder.chmod(0o700)


def test_a_full_disk_mid_run_says_how_to_resume_and_a_rerun_resumes(finished_run, tmp_path, capsys, monkeypatch):
    original, calls = rundir.atomic_write_bytes, []

    def full_after_three_writes(path, data):
        calls.append(path)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        original(path, data)

    monkeypatch.setattr(rundir, "atomic_write_bytes", full_after_three_writes)
    out = tmp_path / "run"
    assert main(best_of_n_argv(out)) == 1
    err = capsys.readouterr().err
    assert "no space left on device" in err.lower() and "rerun the same command" in err and str(out) in err
    assert "Traceback" not in err
    monkeypatch.undo()
    assert main(best_of_n_argv(out)) == 0
    assert [r["score"] for r in results_of(out)] == [r["score"] for r in results_of(finished_run)]


# -- 6. what changed ---------------------------------------------------------------------------------
def test_a_refused_folder_names_the_keys_that_changed(tmp_path):
    meta = {"config": {"n": 4, "generation": {"duration": 1.0}}, "prompts": ["a", "b"],
            "generator": {"generator": "debug-musicgen"}, "reward": {"reward": "debug"}}
    prepare_run_dir(tmp_path, meta)
    changed = copy.deepcopy(meta)
    changed["config"]["n"] = 8
    changed["config"]["generation"]["duration"] = 2.0
    changed["prompts"][1] = "c"
    changed["reward"]["reward"] = "owner/" + "x" * 300
    with pytest.raises(RunMismatchError) as refused:
        prepare_run_dir(tmp_path, changed)
    message = str(refused.value)
    for part in ("config.n: 4 -> 8", "config.generation.duration: 1.0 -> 2.0", "prompts[1]: 'b' -> 'c'",
                 "reward.reward: 'debug' -> 'owner/xxx", str(tmp_path)):
        assert part in message, message
    assert len(message) < 600 and "x" * 100 not in message


# -- 8. two runs on one folder -----------------------------------------------------------------------
def test_a_second_run_on_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time\nhandle = open(sys.argv[1], 'a')\n"
         "fcntl.flock(handle, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(120)", str(out / rundir.LOCK_FILE)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(best_of_n_argv(out)) == 2
        err = capsys.readouterr().err
        assert "in use by another run" in err and str(out) in err
        assert not (out / ".progress").exists() and not (out / "run.json").exists()
        # the lock is held for the whole run: a library call is refused too
        from tunejury_align.recipes.best_of_n_run import run_best_of_n

        with pytest.raises(rundir.RunLockedError):
            run_best_of_n(None, None, ["x"], None, out, {})
    finally:
        holder.kill()
        holder.wait()
    assert main(best_of_n_argv(out)) == 0  # the other process is gone: the lock went with it
