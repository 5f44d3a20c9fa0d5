"""Expert iteration: filter, metrics, training losses (MusicGen, Stable Audio), the run folder (resume
after SIGKILL, 2 processes under accelerate), the CLI and the shipped configs."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tunejury_align.cli as cli
import tunejury_align.cli.common as cli_common
from tunejury_align.config import ConfigError, load_config
from tunejury_align.debug import truth
from tunejury_align.generators import trainer_for
from tunejury_align.generators.musicgen import MusicGenGenerator, MusicGenTrainer, debug_musicgen
from tunejury_align.recipes.expert_iter import ExpertIterConfig, select_kept, split_prompts
from tunejury_align.recipes.expert_iter_run import expert_iter_run_meta, run_expert_iteration
from tunejury_align.recipes.finetune import TrainData, fine_tune, global_batch
from tunejury_align.reward.metrics import frechet_distance, pairwise_cosine_diversity
from tunejury_align.rundir import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
DEBUG_YAML = ROOT / "recipes/debug/expert_iter.yaml"
PROMPTS = ["lofi hip hop beat", "epic orchestral soundtrack", "jazz trio"]
# The resume / 2-process runs: 2 training prompts, 1 held-out, 40 steps with a state save every 4.
RUN_OVERRIDES = ["rounds=1", "samples_per_prompt=3", "heldout_fraction=0.34", "train_batch_size=4", "train_steps=40",
                 "save_every=4"]
RUN_ARGS = ["expert-iter", "--config", str(DEBUG_YAML), "--generator", "debug", "--reward", "debug", "--device", "cpu",
            "--prompt", *PROMPTS, *RUN_OVERRIDES]
# Subprocesses use one thread each (what `accelerate launch` gives each process).
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
def run_main(argv: list[str]) -> int:
    return cli.main(argv)


def cli_command(*prefix: str) -> list[str]:
    return [*(prefix or (sys.executable,)), "-m", "tunejury_align", *RUN_ARGS]


def weights(run: Path, round_index: int = 1) -> dict[str, torch.Tensor]:
    return load_file(run / f"round_{round_index}" / "checkpoint" / "model.safetensors")


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= atol, f"weights differ by {worst}"


class one_thread:
    """Torch on one thread, as the subprocesses: their float reductions then happen in the same order."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


@pytest.fixture(scope="module", autouse=True)
def torch_on_one_thread():
    """Every run here on one thread, as the subprocesses (and quicker on a busy 2-core machine)."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def debug_reward_model():
    from tunejury_align.reward import debug_reward

    return debug_reward()


@pytest.fixture()
def patched_reward(monkeypatch, debug_reward_model):
    """``--reward debug`` in-process without rebuilding the debug reward (same seeded weights)."""
    monkeypatch.setattr(cli_common, "load_reward", lambda args, truth=None: debug_reward_model)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, debug_reward_model):
    out = tmp_path_factory.mktemp("reference") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli_common, "load_reward", lambda args, truth=None: debug_reward_model)
        assert run_main([*RUN_ARGS, "--out", str(out)]) == 0
    return out


# -- filter, metrics, data order ---------------------------------------------------------------------
def test_filters_keep_what_they_say_and_record_the_threshold():
    scores = np.array([[0.1, 0.9, 0.5, 0.3], [0.8, 0.2, 0.7, 0.0]])
    kept, info = select_kept(scores, ExpertIterConfig(keep_top=0.25))
    assert kept == [(0, 1), (1, 0)] and info["threshold"] == 0.8 and info["kept_fraction"] == 0.25
    kept, info = select_kept(scores, ExpertIterConfig(threshold=0.5))
    assert kept == [(0, 1), (0, 2), (1, 0), (1, 2)] and info["threshold"] == 0.5
    kept, info = select_kept(scores, ExpertIterConfig(keep_per_prompt=1, samples_per_prompt=4))
    assert kept == [(0, 1), (1, 0)] and info["per_prompt_thresholds"] == [0.9, 0.8] and info["threshold"] == 0.8
    kept, _ = select_kept(np.zeros((1, 4)), ExpertIterConfig(keep_top=0.5))
    assert kept == [(0, 0), (0, 1)]  # ties go to the lower index
    assert ExpertIterConfig().keep_top == 0.1  # no filter set: the published global top 10 %
    with pytest.raises(ValueError, match="one filter"):
        ExpertIterConfig(threshold=0.0, keep_top=0.1)


def test_frechet_distance_matches_closed_forms():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, (50, 1)), rng.normal(2, 3, (60, 1))
    expected = (x.mean() - y.mean()) ** 2 + (x.std(ddof=1) - y.std(ddof=1)) ** 2
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)
    a, b = rng.normal(size=(40, 6)), rng.normal(1, 2, (30, 6)) @ rng.normal(size=(6, 6))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_trace = np.sqrt(np.linalg.eigvals(cov_a @ cov_b).real.clip(0)).sum()  # non-symmetric route
    direct = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * root_trace
    assert frechet_distance(a, b) == pytest.approx(direct, rel=1e-7)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    wide = rng.normal(size=(4, 300))  # fewer samples than dimensions: rank-deficient, still finite
    assert np.isfinite(frechet_distance(wide, wide + 0.1)) and frechet_distance(wide, wide) < 1e-9


def test_diversity_is_the_mean_pairwise_cosine_distance():
    orthogonal = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    same = np.array([[[1.0, 2.0], [2.0, 4.0]]])
    assert pairwise_cosine_diversity(orthogonal) == pytest.approx(1.0)
    assert pairwise_cosine_diversity(same) == pytest.approx(0.0, abs=1e-12)
    assert pairwise_cosine_diversity(np.concatenate([orthogonal, same])) == pytest.approx(0.5)


def test_data_order_and_heldout_split_are_seeded():
    first_epoch = global_batch(0, 6, 3, seed=0, round_index=1) + global_batch(1, 6, 3, seed=0, round_index=1)
    assert sorted(first_epoch) == list(range(6))
    assert global_batch(5, 6, 3, 0, 1) == global_batch(5, 6, 3, 0, 1) != global_batch(5, 6, 3, 1, 1)
    prompts = [f"p{i}" for i in range(10)]
    train, held = split_prompts(prompts, 0.2, seed=0)
    assert len(held) == 2 and sorted(train + held) == sorted(prompts) and (train, held) == split_prompts(prompts, 0.2, 0)
    assert split_prompts(prompts, 0.0, 0) == (prompts, [])


# -- training losses -----------------------------------------------------------------------------------
def test_musicgen_labels_follow_the_generate_delay_pattern():
    trainer = MusicGenTrainer(debug_musicgen())
    codes = torch.randint(0, 64, (2, 4, 6))
    labels = trainer.delayed_labels(codes)  # (B, L + K - 1, K)
    pad = trainer.pad_token_id
    with_start = torch.cat([torch.full((2, 4, 1), pad), codes], dim=-1).reshape(8, 7)
    _, pattern = trainer.model.decoder.build_delay_pattern_mask(with_start, pad_token_id=pad, max_length=10)
    assert torch.equal(labels.transpose(1, 2), pattern.reshape(2, 4, 10)[:, :, 1:])


def test_gradient_accumulation_takes_the_same_step():
    def train(accumulation: int) -> dict:
        generator = debug_musicgen()
        trainer = trainer_for(generator)
        codes = torch.randint(0, 64, (4, 4, 20), generator=torch.Generator().manual_seed(0))
        config = ExpertIterConfig(train_batch_size=4, gradient_accumulation_steps=accumulation, train_steps=2,
                                  learning_rate=1e-3, ema_decay=0.0)
        fine_tune(trainer, TrainData(codes, PROMPTS + ["rock"]), config, round_index=1)
        return {k: v.clone() for k, v in trainer.parameters_to_train().items()}

    one, two = train(1), train(2)
    scale = max(float(v.abs().max()) for v in one.values())  # the debug LM's code embeddings reach ~17
    assert_same_weights(one, two, atol=1e-6 * max(scale, 1.0))  # equal to float rounding
    base = debug_musicgen().model.state_dict()
    assert any(not torch.equal(base[k], one[k]) for k in one)


@pytest.fixture()
def tiny_stable_audio_generator():
    """debug-stable-audio with short clips and 2 steps."""
    from tunejury_align.generators.stable_audio import StableAudioGenerator, tiny_stable_audio

    return StableAudioGenerator(tiny_stable_audio(), name="tiny-stable-audio",
                                default_options={"steps": 2, "duration": 1.0})


def test_stable_audio_v_objective_matches_the_scheduler_and_trains_the_dit(tiny_stable_audio_generator):
    generator = tiny_stable_audio_generator
    trainer = trainer_for(generator)
    scheduler = generator.pipe.scheduler
    # the v-objective of the trainer, in the scheduler's EDM terms (sigma = tan(pi t / 2))
    t = torch.tensor([0.3, 0.8])
    sigma = torch.tan(t * math.pi / 2)[:, None, None]
    x0, eps = torch.randn(2, 8, 64), torch.randn(2, 8, 64)
    alpha, s = torch.cos(t * math.pi / 2)[:, None, None], torch.sin(t * math.pi / 2)[:, None, None]
    torch.testing.assert_close(scheduler.precondition_inputs(x0 + sigma * eps, sigma), alpha * x0 + s * eps)
    torch.testing.assert_close(scheduler.precondition_noise(sigma.flatten()), t)
    torch.testing.assert_close(scheduler.precondition_outputs(x0 + sigma * eps, alpha * eps - s * x0, sigma), x0,
                               atol=1e-5, rtol=1e-5)
    # loss finite, gradients reach the DiT (and only it), parameters change
    audio = generator.generate(["lofi hip hop beat", "jazz trio"], [1, 2])
    latents = trainer.encode(audio)
    assert latents.shape == (2, 8, 64)
    trainer.train_mode(True)
    loss = trainer.loss(latents, ["lofi hip hop beat", "jazz trio"], [3, 4], condition_dropout=0.5)
    loss.backward()
    assert torch.isfinite(loss)
    dit = dict(generator.pipe.transformer.named_parameters())
    assert all(dit[n.removeprefix("transformer.")].grad is not None for n in trainer.trainable_names)
    assert all(p.grad is None for p in generator.pipe.vae.parameters())
    trainer.train_mode(False)
    before = {k: v.clone() for k, v in trainer.parameters_to_train().items()}
    config = ExpertIterConfig(train_batch_size=2, train_steps=2, learning_rate=1e-3, ema_decay=0.5)
    fine_tune(trainer, TrainData(latents, ["lofi hip hop beat", "jazz trio"]), config, round_index=1)
    after = trainer.parameters_to_train()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in generator.pipe.transformer.parameters())  # frozen again


def test_stable_audio_run_with_a_plain_reward(tiny_stable_audio_generator, tmp_path):
    generator = tiny_stable_audio_generator

    def loudness(audio, sample_rate, prompts):
        return audio.pow(2).mean(dim=(1, 2))

    def embed(audio, sample_rate):  # (B, 16): mean level of 16 stretches of the mono mix
        return torch.nn.functional.adaptive_avg_pool1d(audio.mean(dim=1, keepdim=True).abs(), 16).squeeze(1)

    config = ExpertIterConfig(rounds=1, samples_per_prompt=2, keep_per_prompt=1, train_steps=2, train_batch_size=2,
                              learning_rate=1e-3, ema_decay=0.0, eval_samples_per_prompt=2, heldout_fraction=0.0)
    meta = expert_iter_run_meta(config, ["lofi hip hop beat", "jazz trio"], [], generator, {"reward": "loudness"})
    rows = run_expert_iteration(generator, loudness, ["lofi hip hop beat", "jazz trio"], config, tmp_path / "run",
                                meta, embed=embed)
    assert [r["round"] for r in rows] == [0, 1] and rows[1]["kept"] == 2 and rows[1]["heldout"] is False
    assert rows[0]["frechet_embedding"] == pytest.approx(0.0, abs=1e-9) and rows[1]["diversity"] is not None
    assert (tmp_path / "run" / "round_1" / "checkpoint" / "model_index.json").is_file()
    # the sampling compute: round 0's eval, round 1's generate and eval phases, 2 prompts x 2 samples each;
    # the training compute: round 1's 2 steps of 2 examples, also in the round's done.json
    compute = json.loads((tmp_path / "run" / "run.json").read_text())["compute"]
    steps = generator.options(**config.generation).steps
    assert compute["generator_passes"] == 3 * 4 * steps and compute["reward_calls"] == 12
    assert compute["pass_unit"] == "nfe" and compute["generator_seconds"] > 0
    assert compute["train_steps"] == 2 and compute["train_examples"] == 4 and compute["train_seconds"] > 0
    done = json.loads((tmp_path / "run" / "round_1" / "done.json").read_text())
    assert done["compute"]["train_seconds"] == compute["train_seconds"] and done["compute"]["train_steps"] == 2


# -- configs ----------------------------------------------------------------------------------------
def test_every_shipped_yaml_parses():
    files = sorted((ROOT / "recipes").rglob("expert_iter.yaml"))
    assert {p.parent.name for p in files} >= {"debug", "musicgen", "stable-audio"}
    for path in files:
        config = load_config(ExpertIterConfig, path)
        assert config.rounds >= 1 and config.train_steps >= 1
        assert path.read_text().lstrip().startswith("#") and "align expert-iter" in path.read_text()


def test_config_precedence_and_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rounds: 3\nkeep_top: 0.2\ngeneration:\n  duration: 3.0\n")
    config = load_config(ExpertIterConfig, path, ["generation.top_k=50", "rounds=5"], rounds=4)
    assert config.rounds == 5 and config.generation == {"duration": 3.0, "top_k": 50} and config.keep_top == 0.2
    assert load_config(ExpertIterConfig, path, [], rounds=4).rounds == 4  # flags beat YAML
    # a filter flag replaces the YAML's filter (the CLI resets the other filter keys)
    assert load_config(ExpertIterConfig, path, ["keep_top=null"], threshold=0.5).threshold == 0.5
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['roundz'\]"):
        load_config(ExpertIterConfig, None, ["roundz=3"])
    with pytest.raises(ConfigError, match="one filter"):
        load_config(ExpertIterConfig, path, ["keep_per_prompt=2"])


# -- the CLI and the run folder ---------------------------------------------------------------------------
def test_debug_config_runs_end_to_end(tmp_path, patched_reward, capsys):
    out = tmp_path / "run"
    # the debug config, scaled down to two short rounds so that each mechanism is checked in seconds (no wall-time
    # assertion: a shared CPU made it flaky; timings belong in benchmarks/)
    small = ["rounds=2", "samples_per_prompt=4", "keep_top=0.5", "candidates_per_batch=4", "train_steps=4",
             "train_batch_size=2", "ema_decay=0.5", "save_every=2", "heldout_fraction=0.5", "eval_samples_per_prompt=2"]
    assert run_main(["expert-iter", "--config", str(DEBUG_YAML), "--generator", "debug", "--reward", "debug",
                     "--prompt", "lofi hip hop beat", "epic orchestral soundtrack", "--out", str(out), *small]) == 0
    assert "debug world" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2] and all(r["heldout"] for r in rows)
    assert rows[0]["frechet_clap_audio"] == pytest.approx(0.0, abs=1e-9) and rows[2]["frechet_mert"] > 0
    assert all(np.isfinite(r["eval_reward_mean"]) and r["diversity"] >= 0 for r in rows)
    # the kept set respects the filter (global top 50 % of 1 prompt x 4 samples) and records the threshold
    for r in (1, 2):
        samples = [json.loads(line) for line in (out / f"round_{r}" / "samples.jsonl").read_text().splitlines()]
        kept = [json.loads(line) for line in (out / f"round_{r}" / "kept.jsonl").read_text().splitlines()]
        threshold = json.loads((out / f"round_{r}" / "filter.json").read_text())["threshold"]
        assert len(samples) == 4 and len(kept) == 2 and [s for s in samples if s["kept"]] == kept
        assert threshold == min(k["score"] for k in kept) >= max(s["score"] for s in samples if not s["kept"])
        assert [s["seed"] for s in samples] == [42 + 4 * (r - 1) + c for c in range(4)]
        assert not (out / f"round_{r}" / "train_state.pt").exists()
    # parameters changed (the default trainable set only), and each round starts from the previous one
    base = debug_musicgen().model.state_dict()
    first, second = weights(out, 1), weights(out, 2)
    changed = {k for k in first if not torch.equal(base[k], first[k])}  # (tied copies are saved once)
    # MusicGenTrainer's default trainable set: the decoder LM and the text-to-decoder projection
    assert changed and all(k.startswith(("decoder.", "enc_to_dec_proj.")) for k in changed), sorted(changed)
    assert any(k.startswith("decoder.") for k in changed)
    assert any(not torch.equal(first[k], second[k]) for k in changed)
    # the round-1 checkpoint reloads with a plain from_pretrained and generates
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    checkpoint = out / "round_1" / "checkpoint"
    model = MusicgenForConditionalGeneration.from_pretrained(checkpoint)
    assert all(torch.equal(model.state_dict()[k], first[k]) for k in first)
    reloaded = MusicGenGenerator(model, AutoTokenizer.from_pretrained(checkpoint), name=str(checkpoint))
    audio = reloaded.generate(["lofi hip hop beat"], [7], duration=0.5)
    assert audio.shape == (1, 1, 16_000) and torch.isfinite(audio).all()
    # a rerun is a no-op; other settings are refused
    before = (out / "metrics.jsonl").read_bytes()
    argv = ["expert-iter", "--config", str(DEBUG_YAML), "--generator", "debug", "--reward", "debug", "--prompt",
            "lofi hip hop beat", "epic orchestral soundtrack", "--out", str(out), *small]
    assert run_main(argv) == 0 and (out / "metrics.jsonl").read_bytes() == before
    assert run_main([*argv, "rounds=3"]) == 0  # more rounds continue from the last checkpoint
    assert [json.loads(line)["round"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3]
    assert (out / "metrics.jsonl").read_text().startswith(before.decode()) and weights(out, 2).keys() == second.keys()
    assert run_main([*argv, "learning_rate=0.5"]) == 2
    assert "config.learning_rate: 0.001 -> 0.5" in capsys.readouterr().err


def test_threshold_flag_beats_the_yaml_filter_and_nothing_kept_keeps_the_weights(tmp_path, patched_reward):
    out = tmp_path / "run"
    assert run_main(["expert-iter", "--config", str(DEBUG_YAML), "--generator", "debug", "--reward", "debug",
                     "--prompt", "lofi hip hop beat", "--threshold", "1e9", "rounds=1", "--out", str(out)]) == 0
    info = json.loads((out / "round_1" / "filter.json").read_text())
    assert info["filter"] == "threshold" and info["kept"] == 0
    base = debug_musicgen().model.state_dict()
    assert all(torch.equal(base[k], v) for k, v in weights(out).items())
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[1])["heldout"] is False  # 1 prompt


@pytest.mark.parametrize("extra, message", [
    (["--keep-top", "0.1", "keep_per_prompt=2"], "one filter"),
    (["--heldout", "/nonexistent/heldout.txt"], "prompts file .* not found"),
    (["train_batch_size=3", "gradient_accumulation_steps=2"], "multiple of gradient_accumulation_steps"),
    (["trainable=[nothing_matches]"], "match no parameter"),
])
def test_bad_inputs_fail_before_any_generation(tmp_path, capsys, extra, message):
    import re

    out = tmp_path / "run"
    assert run_main(["expert-iter", "--generator", "debug", "--reward", "debug", "--prompt", "x", "--out", str(out),
                     *extra]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_crash_mid_training_resumes_to_identical_weights(reference_run, tmp_path, debug_reward_model):
    config = load_config(ExpertIterConfig, DEBUG_YAML, RUN_OVERRIDES)
    train, heldout = split_prompts(PROMPTS, config.heldout_fraction, config.heldout_seed)
    meta = expert_iter_run_meta(config, train, heldout, debug_musicgen(), debug_reward_model)

    class Crash(Exception):
        pass

    def crash(round_index, step, loss):
        if step == 10:
            raise Crash

    out = tmp_path / "crashed"
    with pytest.raises(Crash):
        run_expert_iteration(debug_musicgen().to("cpu"), debug_reward_model, train, config, out, meta,
                             heldout=heldout, callback=crash, scorers={"truth": truth})
    saved = torch.load(out / "round_1" / "train_state.pt", weights_only=True)
    assert saved["step"] == 8 and saved["train_seconds"] > 0
    rows = run_expert_iteration(debug_musicgen().to("cpu"), debug_reward_model, train, config, out, meta,
                                heldout=heldout, scorers={"truth": truth})  # a fresh generator, as a new process would
    # load; the CLI run scores the debug world's truth beside the reward
    assert_same_weights(weights(out), weights(reference_run), atol=0.0)
    reference = [json.loads(line) for line in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert rows == reference, [{k for k in set(a) | set(b) if a.get(k) != b.get(k)} for a, b in zip(rows, reference)]
    # training compute: the steps once, the seconds of both attempts (the crashed one's up to its last save)
    trained = json.loads((out / "round_1" / "done.json").read_text())["compute"]
    assert trained["train_steps"] == config.train_steps and trained["train_seconds"] > saved["train_seconds"]


def test_compare_reads_the_last_rounds_heldout_samples_and_the_training_compute(reference_run, tmp_path):
    assert run_main(["compare", str(reference_run), "--out", str(tmp_path / "cmp.html")]) == 0
    compared = json.loads((tmp_path / "cmp.json").read_text())
    last = json.loads((reference_run / "round_1" / "metrics.json").read_text())
    assert compared["prompts"] == 1  # the held-out prompt
    entry = compared["runs"][0]
    assert entry["reward"]["mean"] == pytest.approx(last["eval_reward_mean"], abs=1e-9)
    assert entry["truth"]["mean"] == pytest.approx(last["eval_truth_mean"], abs=1e-9)
    assert entry["compute"]["train_steps"] == 40 and entry["compute"]["train_examples"] == 160
    assert "40 steps, 160 examples" in (tmp_path / "cmp.html").read_text()


def test_sigkill_mid_training_resumes_to_the_same_weights(reference_run, tmp_path, patched_reward):
    out = tmp_path / "killed"
    process = subprocess.Popen(cli_command() + ["--out", str(out)], env=ONE_THREAD, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    state = out / "round_1" / "train_state.pt"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not state.is_file():
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state.is_file() and not (out / "round_1" / "done.json").exists(), "the run should be killed mid-training"
    saved = torch.load(state, weights_only=True)["step"]
    assert 4 <= saved < 40
    assert run_main([*RUN_ARGS, "--out", str(out)]) == 0
    assert [r["step"] for r in read_jsonl(out / "round_1" / "train_log.jsonl")] == list(range(1, 41))
    assert_same_weights(weights(out), weights(reference_run), atol=1e-6)


def test_two_processes_match_one(reference_run, tmp_path):
    out = tmp_path / "two"
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]
    result = subprocess.run(cli_command(*launch) + ["--out", str(out)], env=ONE_THREAD, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (out / "round_1" / "samples" / ".progress").iterdir()) == ["rank0.jsonl",
                                                                                             "rank1.jsonl"]
    assert (out / "round_1" / "kept.jsonl").read_text() == (reference_run / "round_1" / "kept.jsonl").read_text()
    # DDP sums the two processes' gradients where one process sums over its batch: float-close, not bitwise
    assert_same_weights(weights(out), weights(reference_run), atol=1e-5)
    losses = [r["loss"] for r in read_jsonl(out / "round_1" / "train_log.jsonl")]
    reference = [r["loss"] for r in read_jsonl(reference_run / "round_1" / "train_log.jsonl")]
    np.testing.assert_allclose(losses, reference, rtol=1e-5)
