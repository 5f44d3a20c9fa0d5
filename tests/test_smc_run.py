"""`align smc`: the run folder (results, chosen audio, ancestry, compute), resume after SIGKILL and
2 processes == 1 process, byte for byte."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunejury_align.cli import main

PROMPTS = ["lofi hip hop beat", "epic orchestral soundtrack", "jazz trio", "calm solo piano"]
RUN_ARGS = ["smc", "--generator", "debug-audioldm2", "--reward", "debug", "--particles", "3", "--prompt", *PROMPTS,
            "temperature=100", "ess_threshold=1.0", "generation.steps=4", "generation.duration=0.5"]
# one thread per process (what `accelerate launch` gives each), so float reductions run in the same order
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli_subprocess(out, *prefix):
    command = [*prefix] or [sys.executable, "-m"]
    return command + ["tunejury_align", *RUN_ARGS, "--out", str(out)]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smc-reference") / "run"
    result = subprocess.run(cli_subprocess(out), env=ONE_THREAD, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_the_run_folder_holds_particles_ancestry_and_compute(reference_run):
    records = [json.loads(line) for line in (reference_run / "results.jsonl").read_text().splitlines()]
    assert [r["prompt_index"] for r in records] == [0, 1, 2, 3]
    for record in records:
        assert record["seeds"] == [42, 43, 44] and len(record["rewards"]) == 3 and len(record["truth"]) == 3
        assert record["chosen_reward"] == max(record["rewards"]) and (reference_run / record["path"]).is_file()
        assert [t["step"] for t in record["trace"]] == [0, 1, 2] and all("ancestors" in t for t in record["trace"])
    meta = json.loads((reference_run / "run.json").read_text())
    assert meta["compute"]["generator_passes"] == 4 * 3 * 4 and meta["compute"]["pass_unit"] == "nfe"
    assert meta["compute"]["reward_calls"] == 4 * (3 * 3 + 3)
    summary = json.loads((reference_run / "summary.json").read_text())
    assert summary["extras"]["truth"]["low"] <= summary["extras"]["truth"]["mean"] <= summary["extras"]["truth"]["high"]
    assert "reward vs step" in (reference_run / "report.html").read_text()


def test_compare_reads_an_smc_run(reference_run, tmp_path):
    assert main(["compare", str(reference_run), "--out", str(tmp_path / "cmp.html")]) == 0
    (entry,) = json.loads((tmp_path / "cmp.json").read_text())["runs"]
    records = [json.loads(line) for line in (reference_run / "results.jsonl").read_text().splitlines()]
    assert entry["reward"]["mean"] == pytest.approx(sum(r["chosen_reward"] for r in records) / 4)
    assert entry["truth"]["mean"] == pytest.approx(sum(r["truth"][r["chosen"]] for r in records) / 4)
    assert entry["compute"]["generator_passes"] == 48 and entry["label"].startswith("smc K=3")


def test_resume_after_sigkill_gives_identical_results(reference_run, tmp_path):
    out = tmp_path / "killed"
    process = subprocess.Popen(cli_subprocess(out), env=ONE_THREAD, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    log = out / ".progress" / "rank0.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 1:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(log.read_text().splitlines())
    assert 1 <= finished < 4, "the run should have been killed mid-way"
    assert not (out / "results.jsonl").exists()
    resumed = subprocess.run(cli_subprocess(out), env=ONE_THREAD, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "results.jsonl").read_bytes() == (reference_run / "results.jsonl").read_bytes()
    for p in range(4):
        name = f"chosen/p{p:04d}.wav"
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


def test_changed_settings_are_refused_and_musicgen_is_not_a_diffusion_model(reference_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(reference_run, copy)
    assert main([*RUN_ARGS, "potential=sum", "--out", str(copy)]) == 2
    assert "config.potential: 'max' -> 'sum'" in capsys.readouterr().err
    assert main(["smc", "--generator", "debug-musicgen", "--reward", "debug", "--prompt", "x",
                 "--out", str(tmp_path / "mg")]) == 2
    assert "diffusion generator" in capsys.readouterr().err
