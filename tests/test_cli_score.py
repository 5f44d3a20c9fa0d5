"""`align score` run in-process through main()."""

import json
import os
import subprocess
import sys

import numpy as np
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
