"""Every setting is checked against its declared type before anything is written (issue 12, case 3)."""

import json
from pathlib import Path

import pytest

from tunejury_align.cli import main
from tunejury_align.config import ConfigError, load_config
from tunejury_align.recipes.best_of_n import BestOfNConfig
from tunejury_align.recipes.ditto import DittoConfig
from tunejury_align.recipes.expert_iter import ExpertIterConfig
from tunejury_align.reward.training import HeadTrainingConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("override, message", [
    ("n=true", r"'n' must be an integer, got True \(bool\)"),
    ("n=1.5", r"'n' must be an integer, got 1\.5 \(float\)"),
    ("n=abc", r"'n' must be an integer, got 'abc' \(str\)"),
    ("save_all=1", r"'save_all' must be true or false, got 1 \(int\)"),
    ("prompt_prefix=[a]", r"'prompt_prefix' must be a string, got \['a'\] \(list\)"),
    ("generation=5", r"'generation' must be a mapping, got 5 \(int\)"),
    ("bootstrap=null", r"'bootstrap' must be an integer, got None"),
])
def test_wrong_types_name_the_key_the_value_and_the_type(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(BestOfNConfig, None, [override])


def test_yaml_values_are_checked_and_named_with_their_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("n: 1.5\n")
    with pytest.raises(ConfigError, match=r"'n' must be an integer, got 1\.5 \(float\) in .*c\.yaml"):
        load_config(BestOfNConfig, path)


def test_numbers_optionals_and_lists_that_fit_are_accepted():
    config = load_config(DittoConfig, None, ["learning_rate=5e-3", "noise_regularization=1", "iterations=null"])
    assert config.learning_rate == 5e-3 and config.noise_regularization == 1.0 and config.iterations == 70
    config = load_config(ExpertIterConfig, None, ["threshold=2", "trainable=[decoder]", "keep_top=null"])
    assert config.threshold == 2.0 and isinstance(config.threshold, float) and config.trainable == ["decoder"]
    with pytest.raises(ConfigError, match=r"'threshold' must be a number or null, got 'high' \(str\)"):
        load_config(ExpertIterConfig, None, ["threshold=high"])
    with pytest.raises(ConfigError, match=r"'learning_rate' must be a number, got True \(bool\)"):
        load_config(ExpertIterConfig, None, ["learning_rate=true"])
    with pytest.raises(ConfigError, match=r"'exclude' must be a list, got 'mert' \(str\)"):
        load_config(HeadTrainingConfig, None, ["exclude=mert"])


@pytest.mark.parametrize("command, extra, message", [
    ("best-of-n", ["n=true"], r"'n' must be an integer, got True"),
    ("best-of-n", ["generation.duration=long"], r"'generation\.duration' must be a number, got 'long' \(str\)"),
    ("best-of-n", ["generation.top_k=true"], r"'generation\.top_k' must be an integer, got True \(bool\)"),
    ("ditto", ["generation.duration=long"], r"'generation\.duration' must be a number, got 'long' \(str\)"),
    ("ditto", ["generation.negative_prompt=3"], r"'generation\.negative_prompt' must be a string, got 3 \(int\)"),
    ("expert-iter", ["train_steps=1.5"], r"'train_steps' must be an integer, got 1\.5 \(float\)"),
])
def test_a_bad_setting_writes_nothing_and_the_corrected_command_runs(tmp_path, capsys, command, extra, message):
    import re

    out = tmp_path / "run"
    args = [command, "--generator", "debug", "--reward", "debug", "--prompt", "x", "--out", str(out)]
    assert main(args + extra) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (out / "run.json").exists()


def test_the_corrected_command_is_not_refused(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["best-of-n", "--generator", "debug", "--reward", "debug", "--n", "2", "--out", str(out), "--prompt", "x",
            "generation.duration=0.5"]
    assert main([*args, "candidates_per_batch=1.5"]) == 2
    assert main(args) == 0
    assert json.loads((out / "run.json").read_text())["config"]["candidates_per_batch"] == 8
