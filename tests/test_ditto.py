"""DITTO: gradients to the initial noise, checkpointing, rising reward, seeding, iterate 0 against the
adapter and the frozen reward, out-of-memory advice, configs, the example and the resumable CLI run."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import forward_calls

from tunejury_align.config import ConfigError, load_config
from tunejury_align.generators import as_diffusion_generator
from tunejury_align.generators.audioldm2 import debug_audioldm2
from tunejury_align.generators.stable_audio import debug_stable_audio
from tunejury_align.recipes.ditto import (
    PRESETS,
    DittoConfig,
    DittoObjective,
    DittoOutOfMemoryError,
    ditto,
)
from tunejury_align.reward import debug_reward

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "lofi hip hop beat with warm piano chords"
TINY = dict(preset="fast", sampler_steps=3, iterations=2, generation={"duration": 1.0})

pytestmark = pytest.mark.filterwarnings("ignore:Should have t:UserWarning")  # torchsde, Stable Audio's SDE noise


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a busy 2-core machine, thread contention makes these tiny models ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def generators():
    return {"stable-audio": debug_stable_audio(), "audioldm2": debug_audioldm2()}


@pytest.fixture(scope="module")
def frozen_reward():
    return debug_reward()


# -- config ------------------------------------------------------------------------------------
def test_presets_fill_unset_fields_and_precedence(tmp_path):
    assert (DittoConfig().learning_rate, DittoConfig().sampler_steps, DittoConfig().iterations) == (5e-3, 20, 70)
    fast = DittoConfig(preset="fast")
    assert (fast.learning_rate, fast.sampler_steps, fast.iterations) == (0.05, 8, 5) and fast.checkpoint_steps
    path = tmp_path / "c.yaml"
    path.write_text("preset: paper\niterations: 9\ngeneration:\n  duration: 3.0\n")
    # defaults < preset < YAML < flags < overrides
    config = load_config(DittoConfig, path, ["sampler_steps=4"], preset="fast", seed=7)
    assert (config.preset, config.learning_rate, config.iterations, config.sampler_steps, config.seed) == (
        "fast", 0.05, 9, 4, 7)
    assert config.generation_options() == {"duration": 3.0, "steps": 4}
    assert load_config(DittoConfig, path, [], iterations=3).iterations == 3  # flags beat YAML
    assert load_config(DittoConfig, None, ["learning_rate=5e-3"]).learning_rate == 0.005  # YAML reads it as a str
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['lr'\]"):
        load_config(DittoConfig, None, ["lr=0.1"])
    with pytest.raises(ConfigError, match="sampler_steps, not generation.steps"):
        load_config(DittoConfig, None, ["generation.steps=4"])
    with pytest.raises(ConfigError, match="preset must be one of"):
        load_config(DittoConfig, None, ["preset=turbo"])


def test_every_shipped_ditto_yaml_parses():
    files = sorted((ROOT / "recipes").rglob("ditto.yaml"))
    assert {f.parent.name for f in files} >= {"debug", "stable-audio", "audioldm2"}
    for path in files:
        config = load_config(DittoConfig, path)
        assert config.preset in PRESETS and config.iterations >= 1
        text = path.read_text()
        assert text.lstrip().startswith("#") and "align ditto" in text
        assert f"--config recipes/{path.parent.name}/ditto.yaml" in text


# -- the differentiable path -------------------------------------------------------------------
@pytest.mark.parametrize("family", ["stable-audio", "audioldm2"])
def test_gradients_reach_the_noise_and_checkpointing_agrees(generators, frozen_reward, family):
    """The memory settings change nothing in the gradient, and they run: with checkpoint_steps the
    denoiser is called again in backward once per sampler step, with checkpoint_reward the reward's
    CLAP and MERT encoders once each; without them, never."""
    generator = generators[family]
    denoiser = generator.pipe.transformer if family == "stable-audio" else generator.pipe.unet
    encoders = (frozen_reward.clap.audio_branch, frozen_reward.mert)
    steps = TINY["sampler_steps"]
    grads = []
    for steps_ckpt, reward_ckpt in ((False, False), (True, False), (True, True)):
        config = DittoConfig(**TINY, checkpoint_steps=steps_ckpt, checkpoint_reward=reward_ckpt)
        objective = DittoObjective(generator, frozen_reward, PROMPT, config)
        noise = objective.initial_noise().requires_grad_(True)
        with forward_calls(denoiser, *encoders) as calls:
            loss = objective(noise).loss
            in_forward = list(calls)
            loss.backward()
        in_backward = [after - before for after, before in zip(calls, in_forward)]
        assert in_forward == [steps, 1, 1]
        expected = [steps if steps_ckpt else 0, int(reward_ckpt), int(reward_ckpt)]
        assert in_backward == expected, (steps_ckpt, reward_ckpt)
        grads.append(noise.grad)
    plain = grads[0]
    assert torch.isfinite(plain).all() and plain.abs().max() > 0
    for grad in grads[1:]:  # relative to the gradient's scale (latents start at a large sigma)
        assert (grad - plain).abs().max() <= 1e-5 * plain.abs().max()
    modules = [generator.pipe.transformer if family == "stable-audio" else generator.pipe.unet, frozen_reward]
    assert all(p.grad is None for m in modules for p in m.parameters())  # frozen models


def test_noise_regulariser_is_added_to_the_loss(generators, frozen_reward):
    config = DittoConfig(**TINY, noise_regularization=2.0)
    objective = DittoObjective(generators["stable-audio"], frozen_reward, PROMPT, config)
    noise = objective.initial_noise() * 1.5  # 50 % too long for a Gaussian sample of this size
    with torch.no_grad():
        output = objective(noise)
    norm = float(noise.norm())
    assert float(output.noise_norm) == pytest.approx(norm)
    expected = -float(output.reward) + 2.0 * (norm / math.sqrt(noise.numel()) - 1.0) ** 2
    assert float(output.loss) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("family", ["stable-audio", "audioldm2"])
def test_reward_rises_and_iterate_zero_is_the_adapter_and_frozen_reward(generators, frozen_reward, family):
    generator = generators[family]
    config = DittoConfig(**{**TINY, "iterations": 3, "learning_rate": 0.01})  # small steps: a rough reward
    seen = []
    result = ditto(generator, frozen_reward, PROMPT, config=config, on_iteration=seen.append)
    rewards = [r.reward for r in result.history]
    assert seen == result.history and [r.iteration for r in seen] == [0, 1, 2, 3]
    # the debug reward is a learned proxy, rough in the noise: Adam's first step climbs, and the kept
    # iterate is the best one scored
    assert rewards[1] > rewards[0], rewards
    assert result.optimised_reward == max(rewards) > result.baseline_reward == rewards[0]
    assert result.best_iteration == rewards.index(max(rewards)) >= 1
    assert [r.backward for r in result.history] == [True, True, True, False]
    record = result.history[0]
    assert record.noise_norm == pytest.approx(math.sqrt(result.initial_noise.numel()), rel=0.2)
    assert record.seconds > 0 and record.peak_memory > 0 and result.memory_kind.startswith("cpu")
    # iterate 0 = what the adapter generates for the seed, scored by the frozen (no-grad) reward
    adapter_audio = generator.generate([PROMPT], [config.seed], **config.generation_options())
    torch.testing.assert_close(result.baseline_audio, adapter_audio[0], atol=1e-6, rtol=0)
    with torch.no_grad():
        frozen = frozen_reward(adapter_audio, generator.sample_rate, [PROMPT])
        frozen_best = frozen_reward(result.optimised_audio[None], generator.sample_rate, [PROMPT])
    assert result.baseline_reward == pytest.approx(float(frozen), abs=1e-5)
    assert result.optimised_reward == pytest.approx(float(frozen_best), abs=1e-5)
    # compute: 4 iterates forward, and with checkpointing the 3 stepped ones evaluate every step again in backward
    steps = config.sampler_steps
    recomputes = 3 * steps if config.checkpoint_steps else 0
    assert result.compute.generator_passes == 4 * steps + recomputes and result.compute.pass_unit == "nfe"
    assert result.compute.reward_calls == 4 + (3 if config.checkpoint_reward else 0)
    assert 0 < result.compute.encoder_seconds and 0 < result.compute.generator_seconds < sum(r.seconds for r in seen)


def test_the_same_seed_gives_the_same_result(generators, frozen_reward):
    config = DittoConfig(**{**TINY, "iterations": 1})
    first = ditto(generators["stable-audio"], frozen_reward, PROMPT, config=config)
    again = ditto(generators["stable-audio"], frozen_reward, PROMPT, config=config)
    other = ditto(generators["stable-audio"], frozen_reward, PROMPT, config=config, seed=7)
    assert [r.reward for r in again.history] == [r.reward for r in first.history]
    assert torch.equal(again.optimised_audio, first.optimised_audio)
    assert torch.equal(again.optimised_noise, first.optimised_noise)
    assert other.seed == 7 and not torch.allclose(other.baseline_audio, first.baseline_audio)


def test_out_of_memory_names_the_settings_to_change(generators):
    def exhausted(audio, sample_rate, prompts):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    config = DittoConfig(**TINY, checkpoint_steps=False)
    with pytest.raises(DittoOutOfMemoryError, match="iteration 0") as caught:
        ditto(generators["stable-audio"], exhausted, PROMPT, config=config)
    message = str(caught.value)
    assert "checkpoint_steps=true" in message and "checkpoint_reward=true" in message
    assert "sampler_steps=1" in message and "full window" in message
    with pytest.raises(DittoOutOfMemoryError, match=r"generation.duration=0.5"):
        ditto(generators["audioldm2"], exhausted, PROMPT, config=DittoConfig(**TINY))


def test_only_diffusion_generators_are_accepted(generators):
    assert as_diffusion_generator(generators["audioldm2"]) is generators["audioldm2"]
    with pytest.raises(TypeError, match="MusicGen"):
        as_diffusion_generator(object())


def test_example_runs_on_a_pipeline_object(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("ditto_example", ROOT / "examples/ditto_with_your_pipeline.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--iterations", "1", "--steps", "2", "--out", str(tmp_path)]) == 0
    assert "debug world" in capsys.readouterr().out
    assert {p.name for p in tmp_path.iterdir()} == {"baseline.wav", "optimised.wav", "optimised_noise.pt"}


# -- the command line --------------------------------------------------------------------------
def align(argv: list[str]) -> int:
    """``align ...`` in-process."""
    from tunejury_align import cli

    return cli.main(argv)


PROMPTS = ["lofi hip hop beat", "epic orchestral soundtrack"]
CLI_ARGS = ["ditto", "--config", str(ROOT / "recipes/debug/ditto.yaml"), "--generator", "debug", "--reward", "debug",
            "--device", "cpu", "--iterations", "2", "--prompt", *PROMPTS]


def records_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "ditto.jsonl").read_text().splitlines()]


def test_cli_run_resume_and_refusal(tmp_path, capsys, generators, frozen_reward):
    out = tmp_path / "run"
    # 1. A fresh run: audio, noise, per-iterate records, done markers, summary
    assert align([*CLI_ARGS, "--out", str(out)]) == 0
    assert "debug world" in capsys.readouterr().out
    records = records_of(out)
    assert [(r["prompt_index"], r["iteration"]) for r in records] == [(p, i) for p in range(2) for i in range(3)]
    assert set(records[0]) >= {"reward", "noise_norm", "seconds", "peak_memory", "backward"}
    for p in range(2):
        for name in (f"baseline/p{p:04d}.wav", f"optimised/p{p:04d}.wav", f"noise/p{p:04d}.pt", f"done/p{p:04d}.json"):
            assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] == 2 and summary["debug"] and summary["mean_gain"] > 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["iterations"] == 2 and meta["memory_settings"] == {"checkpoint_steps": True,
                                                                             "checkpoint_reward": False}
    # the CLI runs the library recipe: the same rewards as ditto() on the same models and settings
    config = load_config(DittoConfig, ROOT / "recipes/debug/ditto.yaml", [], iterations=2)
    direct = ditto(generators["stable-audio"], frozen_reward, PROMPTS[0], config=config)
    assert [r["reward"] for r in records[:3]] == pytest.approx([r.reward for r in direct.history], abs=1e-6)
    # `align compare` reads the finished run: the optimised audio's reward and truth per prompt
    assert align(["compare", str(out), "--out", str(tmp_path / "cmp.html")]) == 0
    compared = json.loads((tmp_path / "cmp.json").read_text())["runs"][0]
    assert compared["reward"]["mean"] == pytest.approx(summary["mean_optimised_reward"], abs=1e-9)
    assert compared["truth"]["mean"] == pytest.approx(summary["mean_optimised_truth"], abs=1e-9)
    assert compared["compute"]["generator_passes"] > 0 and compared["label"].startswith("DITTO 2 iterations")
    # 2. Rerunning the finished run is a no-op
    before = (out / "ditto.jsonl").read_bytes()
    assert align([*CLI_ARGS, "--out", str(out)]) == 0
    assert (out / "ditto.jsonl").read_bytes() == before
    # 3. A prompt interrupted half-way (records, a torn line, no done marker) is redone from its start;
    #    the memory-only checkpoint_reward may change on a resume
    (out / "done/p0001.json").unlink()
    with open(out / "ditto.jsonl", "a") as handle:
        handle.write(json.dumps({**records[3], "reward": -99.0}) + "\n" + '{"prompt_index": 1, "iter')
    assert align([*CLI_ARGS, "checkpoint_reward=true", "--out", str(out)]) == 0
    resumed = records_of(out)
    assert [(r["prompt_index"], r["iteration"]) for r in resumed] == [(p, i) for p in range(2) for i in range(3)]
    assert [r["reward"] for r in resumed] == pytest.approx([r["reward"] for r in records], abs=1e-6)
    assert json.loads((out / "done/p0001.json").read_text())["checkpoint_reward"] is True
    # 4. Other settings are refused in the same folder
    capsys.readouterr()
    assert align([*CLI_ARGS, "learning_rate=0.5", "--out", str(out)]) == 2
    assert "config.learning_rate: 0.05 -> 0.5" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--generator", "debug-musicgen"], "needs a diffusion generator .*stable-audio"),
    (["generation.steps=4"], "sampler_steps, not generation.steps"),
    (["generation.temperature=1.0"], "bad generation option .*temperature"),
])
def test_cli_bad_inputs_fail_before_any_work(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    args = ["ditto", "--generator", "debug", "--reward", "debug", "--prompt", "x", "--out", str(out)]
    assert align(args + extra) == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not (out / "ditto.jsonl").exists()


def test_cli_out_of_memory_exits_with_advice(tmp_path, capsys, monkeypatch):
    from tunejury_align import cli

    def exhausted_reward(args, truth=None):
        def reward(audio, sample_rate, prompts):
            raise torch.OutOfMemoryError("CUDA out of memory")
        return reward

    monkeypatch.setattr(cli.common, "load_reward", exhausted_reward)
    out = tmp_path / "run"
    assert align([*CLI_ARGS, "--generator", "debug-audioldm2", "--out", str(out)]) == 1  # AudioLDM2 by name too
    err = capsys.readouterr().err
    assert "out of memory in DITTO iteration 0" in err and "checkpoint_reward=true" in err
    assert "generation.duration=0.5" in err and not (out / "done").exists()


def test_cli_escapes_control_characters_in_prompts(tmp_path, capsys):
    """A prompt holding ANSI codes (recolouring the terminal) is printed escaped (issue 12, case 9)."""
    out = tmp_path / "run"
    assert align(["ditto", "--config", str(ROOT / "recipes/debug/ditto.yaml"), "--generator", "debug", "--reward",
                  "debug", "--device", "cpu", "--iterations", "1", "sampler_steps=2", "--out", str(out),
                  "--prompt", "calm \x1b[31mred\x1b[0m piano"]) == 0
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err and "calm \\x1b[31mred\\x1b[0m piano" in captured.out
