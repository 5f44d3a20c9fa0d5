"""`align score` run in-process through main()."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import make_clip

from tunejury_align.cli import main


def write_clips(folder, names=("a.wav", "b.flac")):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        sf.write(folder / name, make_clip(1.5, 22_050, ["tone", "chord", "noise"][i % 3]).T.numpy(), 22_050)
    return folder


def test_score_json_with_percentiles_and_per_file_errors(hub_cache, tmp_path, capsys):
    folder = write_clips(tmp_path / "clips")
    (folder / "broken.wav").write_bytes(b"not audio")
    sf.write(folder / "nan.wav", np.full((500, 1), np.nan, dtype=np.float32), 16_000, subtype="FLOAT")
    code = main(["score", str(folder), "--prompt", "jazz", "--json"])
    out, err = capsys.readouterr()
    records = {os.path.basename(r["file"]): r for r in map(json.loads, out.splitlines())}
    assert code == 1  # some files failed
    assert set(records) == {"a.wav", "b.flac", "broken.wav", "nan.wav"}
    assert "cannot read audio" in records["broken.wav"]["error"] and "NaN" in records["nan.wav"]["error"]
    for name in ("a.wav", "b.flac"):
        record = records[name]
        assert isinstance(record["score"], float) and record["prompt"] == "jazz"
        assert len(record["percentiles"]) == 7 and all(0 <= p <= 100 for p in record["percentiles"].values())
        assert "debug" not in record
    assert "2 of 4 file(s) could not be scored" in err


def test_score_matches_the_library(hub_cache, reward, tmp_path, capsys):
    folder = write_clips(tmp_path / "clips", ("one.wav",))
    assert main(["score", str(folder / "one.wav"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert abs(record["score"] - reward.score_files([folder / "one.wav"])[0]) < 1e-6


def test_debug_reward_is_labelled(tmp_path, capsys):
    folder = write_clips(tmp_path / "clips", ("x.wav",))
    assert main(["score", str(folder), "--reward", "debug"]) == 0
    out = capsys.readouterr().out
    assert "debug reward" in out and "(debug)" in out
    assert main(["score", str(folder), "--reward", "debug", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["debug"] is True


def test_score_records_the_truth_of_the_world_it_is_given(tmp_path, capsys):
    """``world.truth=...`` among the inputs: the debug reward of that world scores, and the truth printed is its
    own (the temporal truth of the file here); a truth that cannot be found is refused before any model loads."""
    import time

    from tunejury_align.debug import temporal
    from tunejury_align.reward.audio import read_audio

    folder = write_clips(tmp_path / "clips", ("x.wav",))
    assert main(["score", str(folder / "x.wav"), "--reward", "debug", "--prompt", "jazz trio", "--json",
                 "world.truth=temporal"]) == 0
    record = json.loads(capsys.readouterr().out)
    wave, rate = read_audio(folder / "x.wav")
    assert record["truth"] == pytest.approx(float(temporal.truth(wave[None], rate, ["jazz trio"])[0]), rel=1e-6)
    assert main(["score", str(folder), "--reward", "debug", "world.truth=temporal"]) == 0
    assert "truth: the debug world's truth temporal (tunejury_align.debug.temporal:truth)" in capsys.readouterr().out
    started = time.perf_counter()
    assert main(["score", str(folder), "--reward", "debug", "world.truth=no_such_module:truth"]) == 2
    assert "cannot import no_such_module" in capsys.readouterr().err and time.perf_counter() - started < 5
    assert main(["score", str(folder), "world.truth=temporal"]) == 2  # a real reward: no debug world to give it to
    assert "neither --generator nor --reward is a debug model" in capsys.readouterr().err


def test_prompts_file(hub_cache, tmp_path, capsys):
    folder = write_clips(tmp_path / "clips")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"file": "a.wav", "prompt": "piano"}) + "\n" +
                       json.dumps({"file": "b.flac", "prompt": ""}) + "\n")
    assert main(["score", str(folder), "--prompts-file", str(prompts), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in records] == ["piano", ""]
    csv_file = tmp_path / "prompts.csv"
    csv_file.write_text("file,prompt\na.wav,piano\n")
    assert main(["score", str(folder), "--prompts-file", str(csv_file)]) == 2
    assert "no prompt for" in capsys.readouterr().err


def test_missing_model_is_an_error_not_a_switch_to_debug(hub_cache, tmp_path, capsys):
    folder = write_clips(tmp_path / "clips", ("x.wav",))
    assert main(["score", str(folder), "--reward", "TuneJury/not-there"]) == 2
    err = capsys.readouterr().err
    assert "TuneJury/not-there" in err and "debug" not in err


def test_empty_folder_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["score", str(tmp_path / "empty"), "--reward", "debug"]) == 2
    assert "no audio files" in capsys.readouterr().err


def test_debug_reward_never_touches_the_hub_cache(tmp_path):
    """Built with an empty HF_HOME and the hub *not* marked offline: nothing is fetched or cached."""
    home = tmp_path / "hf"
    home.mkdir()
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0"}
    code = ("import torch; from tunejury_align.reward import TuneJuryReward;"
            "r = TuneJuryReward.from_pretrained('debug');"
            "print(float(r(torch.zeros(1, 1, 16000), 16000, 'x')[0]))")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert list(home.rglob("*")) == []


# -- issue 12: bad input never costs finished work ---------------------------------------------------
def test_too_short_clips_are_error_rows_and_the_others_are_scored(tmp_path, capsys):
    folder = write_clips(tmp_path / "clips", ("a.wav", "d.wav"))
    sf.write(folder / "b_one_sample.wav", np.zeros(1, dtype=np.float32), 22_050)
    sf.write(folder / "c_10ms.wav", np.full(220, 0.1, dtype=np.float32), 22_050)
    assert main(["score", str(folder), "--reward", "debug", "--json"]) == 1
    out, err = capsys.readouterr()
    records = {os.path.basename(r["file"]): r for r in map(json.loads, out.splitlines())}
    assert set(records) == {"a.wav", "b_one_sample.wav", "c_10ms.wav", "d.wav"}
    for name in ("b_one_sample.wav", "c_10ms.wav"):
        assert "too short" in records[name]["error"] and "400 samples" in records[name]["error"]
    assert isinstance(records["a.wav"]["score"], float) and isinstance(records["d.wav"]["score"], float)
    assert "2 of 4 file(s) could not be scored" in err


@pytest.mark.parametrize("as_json", [True, False])
def test_results_stream_so_an_interrupt_keeps_what_was_done(tmp_path, capsys, monkeypatch, as_json):
    from tunejury_align.reward import TuneJuryReward

    folder = write_clips(tmp_path / "clips", ("a.wav", "b.wav", "c.wav"))
    original, calls = TuneJuryReward.forward, []

    def interrupted_on_the_third(self, audio, sample_rate, prompts=None):  # one reward call per file
        calls.append(audio.shape)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, audio, sample_rate, prompts)

    monkeypatch.setattr(TuneJuryReward, "forward", interrupted_on_the_third)
    assert main(["score", str(folder), "--reward", "debug", *(["--json"] if as_json else [])]) == 130
    out = capsys.readouterr().out
    if as_json:
        assert [os.path.basename(json.loads(line)["file"]) for line in out.splitlines()] == ["a.wav", "b.wav"]
    else:
        rows = [line for line in out.splitlines() if not line.startswith("#")]
        assert rows[0].startswith("file") and [row.split()[0][-5:] for row in rows[1:]] == ["a.wav", "b.wav"]


def test_empty_truncated_and_special_files(tmp_path, capsys):
    folder = write_clips(tmp_path / "clips", ("good.wav",))
    (folder / "empty.wav").write_bytes(b"")
    data = (folder / "good.wav").read_bytes()
    (folder / "truncated.wav").write_bytes(data[: len(data) // 2])  # the header still says 1.5 s
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)  # opening it would block forever: it must be refused from its stat
    assert main(["score", str(folder / "empty.wav"), str(folder / "truncated.wav"), str(fifo), str(folder / "good.wav"),
                 "--reward", "debug", "--json"]) == 1
    out, err = capsys.readouterr()
    records = {os.path.basename(r["file"]): r for r in map(json.loads, out.splitlines())}
    assert "empty (0 bytes)" in records["empty.wav"]["error"]
    assert "not a regular file" in records["pipe.wav"]["error"]
    truncated = records["truncated.wav"]
    assert isinstance(truncated["score"], float) and "truncated" in truncated["warning"]
    assert "0.75 s" in truncated["warning"] and "1.50 s" in truncated["warning"]
    assert "truncated" in err


def test_an_empty_folder_among_several_inputs_is_its_own_error(tmp_path, capsys):
    folder = write_clips(tmp_path / "clips", ("a.wav",))
    (tmp_path / "empty").mkdir()
    assert main(["score", str(tmp_path / "empty"), str(folder), "--reward", "debug", "--json"]) == 1
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert "no audio files" in records[0]["error"] and isinstance(records[1]["score"], float)


def test_bom_prompts_file_wide_names_and_control_characters(tmp_path, capsys):
    folder = tmp_path / "clips"
    write_clips(folder, ("钢琴曲.wav", "evil\x1b[31mred.wav", "plain.wav"))
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("file,prompt\n钢琴曲.wav,piano\nevil\x1b[31mred.wav,x\nplain.wav,\n", encoding="utf-8-sig")
    assert main(["score", str(folder), "--prompts-file", str(prompts), "--reward", "debug"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[31m" in out
    rows = [line for line in out.splitlines() if not line.startswith("#")]
    from unicodedata import east_asian_width

    def width(text):
        return sum(2 if east_asian_width(c) in "WF" else 1 for c in text)

    import re

    score_columns = {width(row[: re.search(r" (-?\d+\.\d{4}) ", row).start(1)]) for row in rows[1:]}
    assert len(score_columns) == 1, rows  # the score column starts at the same display column on every row


def test_invalid_calibration_json_names_the_file(tmp_path, capsys):
    folder = write_clips(tmp_path / "clips", ("a.wav",))
    calibration = tmp_path / "cal.json"
    calibration.write_text('{"biases": {"musicgen": 0.1,\n "x": }')
    assert main(["score", str(folder), "--reward", "debug", "--calibration", str(calibration), "--system", "x"]) == 2
    err = capsys.readouterr().err
    assert "cal.json" in err and "line 2" in err and "Traceback" not in err
    calibration.write_text('{"biases": {"x": "abc"}}')
    assert main(["score", str(folder), "--reward", "debug", "--calibration", str(calibration), "--system", "x"]) == 2
    assert "'abc'" in capsys.readouterr().err


def test_a_byte_order_mark_is_not_part_of_the_first_prompt(tmp_path):
    from tunejury_align.cli.common import read_prompts_from

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("lofi hip hop\n# a comment\njazz trio\n", encoding="utf-8-sig")
    assert read_prompts_from(prompts) == ["lofi hip hop", "jazz trio"]
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('{"prompt": "lofi"}\n', encoding="utf-8-sig")
    assert read_prompts_from(jsonl) == ["lofi"]
