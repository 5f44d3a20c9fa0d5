"""The debug world (issue 13): its truth, its generators' seed variation, the learned proxy reward, and
what each recipe does to the truth. The recipe tests are the issue's "done when" list, seeded; their
thresholds are the issue's, not fitted to the numbers (``benchmarks/debug_world.py`` prints those)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import forward_calls

from tunejury_align import BestOfNConfig, DittoConfig, best_of_n
from tunejury_align.debug import TRUTH_LABEL, target_profile, truth, truth_parts, world_scorers
from tunejury_align.debug.proxy import ProxySpec, cache_dir, features_entry, head_entry, truths_entry
from tunejury_align.debug.truth import ANALYSIS_RATE, BAND_EDGES
from tunejury_align.debug.world import HELDOUT_PROMPTS, TRAIN_PROMPTS, pairwise_accuracy_vs_truth, world_samples
from tunejury_align.generators import load_generator
from tunejury_align.reward import debug_reward
from tunejury_align.reward.audio import resample

PROMPTS = [line.strip() for line in open("recipes/debug/prompts.txt") if line.strip()]


def bootstrap_low(values, resamples: int = 2000, seed: int = 0) -> float:
    """The 2.5th percentile of the bootstrap distribution of the mean (over prompts)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return float(np.percentile(values[rng.integers(0, len(values), (resamples, len(values)))].mean(1), 2.5))


def shaped_noise(levels_db, seconds: float = 2.0, seed: int = 0, gain: float = 0.05) -> torch.Tensor:
    """``(1, 1, T)`` noise at 16 kHz whose 8 band levels follow ``levels_db`` (built in the FFT domain)."""
    n = int(seconds * ANALYSIS_RATE)
    spectrum = torch.fft.rfft(torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    freqs = torch.fft.rfftfreq(n, 1.0 / ANALYSIS_RATE)
    scale = torch.zeros_like(freqs)
    for (lo, hi), level in zip(zip(BAND_EDGES[:-1], BAND_EDGES[1:]), levels_db):
        scale[(freqs >= lo) & (freqs < hi)] = 10 ** (float(level) / 20)
    audio = torch.fft.irfft(spectrum * scale, n=n)
    return (gain * audio / audio.std()).float().view(1, 1, -1)


# --- the truth ---------------------------------------------------------------------------------------

def test_truth_prefers_the_prompts_own_band_profile():
    prompt, other = "calm solo piano", "heavy rock guitar riff"
    own = shaped_noise(target_profile(prompt).tolist())
    parts = truth_parts(own, ANALYSIS_RATE, prompt)
    assert parts["balance"].item() > -0.25  # within 1.5 dB RMS (the STFT window leaks across band edges)
    assert truth(own, ANALYSIS_RATE, prompt).item() > truth(own, ANALYSIS_RATE, other).item() + 0.2
    flat = shaped_noise([0.0] * 8)
    assert truth(own, ANALYSIS_RATE, prompt).item() > truth(flat, ANALYSIS_RATE, prompt).item() + 0.2
    assert not torch.equal(target_profile(prompt), target_profile(other))
    assert torch.equal(target_profile(prompt), target_profile("Calm, SOLO piano!"))  # words, not spelling
    assert abs(target_profile(prompt).mean().item()) < 1e-5


def test_truth_penalties_are_the_documented_ones():
    base = shaped_noise(target_profile("jazz trio").tolist(), gain=0.1)
    clean = truth_parts(base, ANALYSIS_RATE, "jazz trio")
    assert clean["clipping"].item() == 0 and clean["silence"].item() == 0 and clean["level"].item() == 0
    clipped = base.clone()
    clipped[..., : base.shape[-1] // 4] = 1.0  # a quarter of the samples at full scale
    assert truth_parts(clipped, ANALYSIS_RATE, "jazz trio")["clipping"].item() == pytest.approx(-2.5, abs=1e-3)
    gapped = base.clone()
    gapped[..., base.shape[-1] // 2:] = 0.0  # half of the 50 ms frames silent
    assert truth_parts(gapped, ANALYSIS_RATE, "jazz trio")["silence"].item() == pytest.approx(-1.0, abs=0.05)
    quiet = truth_parts(base * 10 ** (-30 / 20), ANALYSIS_RATE, "jazz trio")  # -20 dBFS - 30 dB: 22 dB out
    assert quiet["level"].item() == pytest.approx(-0.1 * (quiet["level_db"].item() + 20 + 8) * -1, rel=1e-4)
    assert quiet["level"].item() < -1.5


def test_truth_is_batched_deterministic_differentiable_and_checks_its_input():
    audio = torch.cat([shaped_noise([0.0] * 8, seed=s) for s in range(3)]).repeat(1, 2, 1)  # stereo
    prompts = ["calm solo piano", "fast techno drums", ""]
    first = truth(audio, ANALYSIS_RATE, prompts)
    assert first.shape == (3,) and torch.equal(first, truth(audio, ANALYSIS_RATE, prompts))
    at_44k = truth(resample(audio, ANALYSIS_RATE, 44100), 44100, prompts)
    # any rate: the truth listens at 16 kHz (the two resamplings roll off the top band a little)
    assert torch.allclose(first, at_44k, atol=0.06)
    audio.requires_grad_(True)
    truth(audio, ANALYSIS_RATE, prompts).sum().backward()
    assert audio.grad is not None and audio.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="2 prompts for 3 clips"):
        truth(audio.detach(), ANALYSIS_RATE, prompts[:2])
    with pytest.raises(ValueError, match="NaN"):
        truth(torch.full((1, 1, 16000), float("nan")), ANALYSIS_RATE, "x")


def test_world_scorers_only_for_debug_generators():
    assert world_scorers(load_generator("debug-musicgen")) == {"truth": truth}
    assert world_scorers(object()) == {}
    assert "debug" in TRUTH_LABEL


# --- the debug generators and the proxy reward ---------------------------------------------------------

@pytest.mark.parametrize("name", ["debug-musicgen", "debug-stable-audio", "debug-audioldm2"])
def test_debug_generators_vary_with_the_seed_and_so_does_the_truth(name):
    generator = load_generator(name)
    audio = generator.generate(["calm solo piano"] * 6, list(range(6)))
    assert torch.isfinite(audio).all()
    assert not torch.equal(audio[0], audio[1])
    values = truth(audio, generator.sample_rate, "calm solo piano")
    assert values.std().item() > 0.03, values  # best-of-N has something to find
    again = generator.generate(["calm solo piano"] * 2, [0, 1])  # seeded (up to batch-size rounding)
    torch.testing.assert_close(again, audio[:2], rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def reward():
    return debug_reward()


def test_proxy_is_cached_by_content_hash(reward):
    spec = ProxySpec()
    path = head_entry(spec, truth)
    assert path.parent == cache_dir() and path.is_file()  # built once by the fixture, reused after
    again = debug_reward()
    for name, value in reward.head.state_dict().items():
        assert torch.equal(value, again.head.state_dict()[name])
    assert head_entry(ProxySpec(head_seed=1), truth) != path


def test_two_truths_never_share_a_cache_entry(reward, tmp_path, monkeypatch):
    """Heads and truth values are keyed by the truth's identity (qualified name and its module's source); the clips'
    features are not (a second truth reuses them). Editing a truth's module gives it a new identity."""
    from tunejury_align.debug import temporal
    from tunejury_align.debug.worlds import truth_identity

    spec = ProxySpec()
    assert head_entry(spec, truth) != head_entry(spec, temporal.truth)
    assert truths_entry("debug-musicgen", "a", truth, spec) != truths_entry("debug-musicgen", "a", temporal.truth, spec)
    # the features do not depend on the truth: one entry per generator, panel and encoder set, whatever the truth
    assert features_entry("debug-musicgen", "a", None, spec).is_file()
    assert features_entry("debug-musicgen", "a", None, spec) != features_entry("debug-musicgen", "a", 101, spec)
    assert truth_identity(truth)["name"] == "tunejury_align.debug.truth:truth"
    module = tmp_path / "my_truths.py"
    module.write_text("def loud(audio, sample_rate, prompts):\n    return audio.pow(2).mean(dim=(1, 2))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import my_truths

    first = truth_identity(my_truths.loud)
    module.write_text("def loud(audio, sample_rate, prompts):\n    return audio.abs().mean(dim=(1, 2))\n")
    edited = truth_identity(importlib.reload(my_truths).loud)
    assert first["name"] == edited["name"] == "my_truths:loud" and first["sha256"] != edited["sha256"]
    assert head_entry(spec, my_truths.loud) != head_entry(spec, truth)


def test_proxy_accuracy_against_the_truth_on_fresh_clips(reward):
    prompts = list(TRAIN_PROMPTS[:8]) + list(HELDOUT_PROMPTS)  # seen and unseen prompts, unseen seeds
    fresh = world_samples(reward.features, prompts, 3, first_seed=70_000)
    with torch.no_grad():
        accuracy = pairwise_accuracy_vs_truth(reward.head(fresh.features), fresh)
    assert 0.62 <= accuracy <= 0.80, accuracy


def test_the_world_is_good_enough_under_both_shipped_truths(reward, judges, temporal_world):
    """The world-quality criteria of ``tunejury_align.debug.proxy`` (fixed before any recipe's result was looked
    at): for the spectral and the temporal truth, the reward and each of the six judges order fresh clips as the
    truth does 62-80 % of the time, and their Spearman with the truth over best-of-N candidates is >= 0.25."""
    from tunejury_align.debug.proxy import ACCURACY_RANGE, MIN_SPEARMAN, world_quality

    measured = world_quality([(reward, judges), temporal_world])
    assert [m["truth"] for m in measured] == ["spectral (tunejury_align.debug.truth:truth)",
                                              "temporal (tunejury_align.debug.temporal:truth)"]
    for world in measured:
        assert len(world["heads"]) == 7
        for name, head in world["heads"].items():
            assert ACCURACY_RANGE[0] <= head["accuracy"] <= ACCURACY_RANGE[1], (world["truth"], name, head)
            assert head["spearman"] >= MIN_SPEARMAN, (world["truth"], name, head)
        assert world["ok"]


def test_the_first_command_prints_no_warning_of_another_library(reward, tmp_path):
    """The README's first command, as a user runs it (a fresh process; the debug world cached): nothing on stderr
    comes from transformers, diffusers or torch."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "tunejury_align", "best-of-n", "--n", "16", "--generator", "debug",
                           "--reward", "debug", "--prompts", "recipes/debug/prompts.txt", "--out", str(tmp_path / "bon")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for marker in ("transformers", "diffusers", "Warning", "warn("):
        assert marker not in done.stderr, done.stderr


# --- any truth a user gives the world -------------------------------------------------------------------------

def bright_truth(audio, sample_rate, prompts):
    """A user's own truth: the share of the clip's power above 2 kHz (brighter is better), whatever the prompt."""
    spectrum = torch.fft.rfft(audio.float().mean(dim=1)).abs().pow(2)
    freqs = torch.fft.rfftfreq(audio.shape[-1], 1.0 / sample_rate)
    return spectrum[:, freqs >= 2000].sum(-1) / spectrum.sum(-1).clamp_min(1e-12)


def test_a_users_truth_builds_its_world_and_best_of_n_records_it(reward, tmp_path, capsys):
    """``world.truth=module:function``: the debug reward is trained on that truth (its own cache entry) and the run
    records it, names it in run.json and in what it prints, and a resume under another truth is refused."""
    from tunejury_align.cli import main

    name = "test_debug_world:bright_truth"
    out = tmp_path / "bon"
    argv = ["best-of-n", "--n", "4", "--generator", "debug", "--reward", "debug", "--prompt", "calm solo piano",
            "jazz trio", "--out", str(out), f"world.truth={name}"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"truth: the debug world's truth {name}" in captured.out
    # the build shows its progress: the clips, then the head's epochs with its validation accuracy
    assert "debug world: debug-musicgen clips:" in captured.err
    assert "debug world: debug head:" in captured.err and "val accuracy" in captured.err
    run = json.loads((out / "run.json").read_text())
    assert run["world"]["truth"] == name and run["reward"]["truth"] == name and run["config"]["world"]["truth"] == name
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    generator = load_generator("debug-musicgen")
    for row in rows[:2]:  # the recorded truth is the user's, of the very candidate
        audio = generator.generate([row["prompt"]], [row["seed"]], duration=2.0)
        assert row["truth"] == pytest.approx(float(bright_truth(audio, generator.sample_rate, [row["prompt"]])[0]),
                                             rel=1e-5)
    users = debug_reward(truth=bright_truth)
    assert users.info.truth == name and users.world_truth is bright_truth
    assert not torch.equal(users.head.net[0].weight, reward.head.net[0].weight)  # another world's head
    assert main(argv[:-1]) == 2  # the same folder under the shipped truth: refused, not mixed
    assert "world" in capsys.readouterr().err


# --- the recipes, measured against the truth ---------------------------------------------------------------

#: measured in this world (``python benchmarks/debug_world.py``; README, "The debug world"): a strict xfail fails the
#: run the day the method starts to gain, so that the README's table is measured again
NO_GAIN_MG = pytest.mark.xfail(strict=True, reason="measured: best-of-16 on debug MusicGen does not raise the "
                                                   "spectral truth (-0.002 [-0.132, +0.092])")


@pytest.mark.parametrize("name", [pytest.param("debug-musicgen", marks=NO_GAIN_MG), "debug-stable-audio"])
def test_best_of_16_raises_the_truth_beyond_its_interval(reward, name):
    result = best_of_n(load_generator(name), reward, PROMPTS, config=BestOfNConfig(n=16, bootstrap=0),
                       scorers={"truth": truth})
    truths = result.extra_scores["truth"]
    assert len(PROMPTS) == 8 and truths.shape == (8, 16)
    # best-of-1's expected truth is the mean over the 16 single draws
    gain = truths[np.arange(8), result.winners] - truths.mean(axis=1)
    assert bootstrap_low(gain) > 0, gain
    assert bootstrap_low(result.scores.max(axis=1) - result.scores.mean(axis=1)) > 0


@pytest.fixture(scope="module")
def judges(reward):
    from tunejury_align.reward.judges import load_judges

    return load_judges("debug", reward)


def ditto_run(reward, judges, prompts, config, out):
    """A DITTO run folder on debug Stable Audio with the reward's world's truth and the debug judges recorded (as
    `align ditto --judges debug` runs it); returns its summary, with the alarm."""
    from tunejury_align.recipes.ditto_run import ditto_run_meta, run_ditto
    from tunejury_align.reward.judges import judge_scorers

    generator = load_generator("debug-stable-audio")
    meta = {**ditto_run_meta(config, prompts, generator, reward), "judges": [j.info() for j in judges]}
    return run_ditto(generator, reward, prompts, config, out, meta,
                     scorers={"truth": reward.world_truth, **judge_scorers(reward, judges)})


def test_debug_judges_are_held_out_heads_of_the_world(reward, judges):
    from tunejury_align.reward.judges import judge_scorers

    assert [j.name for j in judges] == ["debug-leave-a", "debug-leave-b", "debug-leave-c", "debug-alt-leave-a",
                                        "debug-alt-leave-b", "debug-alt-leave-c"]
    weights = [torch.cat([p.flatten() for p in j.head.parameters()]) for j in judges]
    assert not torch.equal(weights[0], weights[1])  # other seeds, other left-out listener panel
    alt = [j for j in judges if j.own_encoders]
    assert [j.name for j in alt] == [j.name for j in judges[3:]]
    assert alt[0].model is alt[1].model is alt[2].model  # one other encoder set, read by the three
    mine, theirs = dict(alt[0].model.mert.named_parameters()), dict(reward.mert.named_parameters())
    assert mine.keys() == theirs.keys() and not all(torch.equal(mine[k], theirs[k]) for k in mine)  # other weights
    # the reward and the judges on its features: one pass of its encoders; the three others: one of theirs
    generator = load_generator("debug-stable-audio")
    audio, prompts = generator.generate(PROMPTS[:2], [0, 1]), PROMPTS[:2]
    encoders = [m for r in (reward, *(j.model for j in alt)) for m in (r.clap.audio_branch, r.mert)]
    with forward_calls(*encoders) as calls, torch.no_grad():
        scores = reward(audio, generator.sample_rate, prompts)
        judged = {n: fn(audio, generator.sample_rate, prompts) for n, fn in judge_scorers(reward, judges).items()}
    assert calls == [1] * 8
    with torch.no_grad():  # a judge on its own encoders: its head on their features
        own = alt[0].head(alt[0].model.features(audio, generator.sample_rate, prompts))
        assert torch.allclose(judged["judge_" + alt[0].name], own)
    assert torch.isfinite(scores).all() and len(judged) == 6


@pytest.fixture(scope="module")
def ditto_fast(reward, judges, tmp_path_factory):
    summary = ditto_run(reward, judges, PROMPTS, DittoConfig(preset="fast"), tmp_path_factory.mktemp("fast"))
    return summary, [r["optimised_truth"] - r["baseline_truth"] for r in summary["per_prompt"]]


def test_ditto_fast_does_not_lower_the_truth(ditto_fast):
    """DITTO ``fast`` raises the reward (+0.44) and the spectral truth a little (+0.050 [+0.006, +0.103]): a run
    that does not game the reward."""
    summary, gains = ditto_fast
    assert summary["mean_gain"] > 0  # the reward rose
    assert bootstrap_low(-np.asarray(gains)) < 0, gains  # the truth did not fall beyond its interval


@pytest.mark.xfail(strict=True, reason="measured: the alarm fires on loudness (the kept iterate louder than the "
                                       "plain samples' 75th percentile on 6 of 8 prompts) while the truth rose: a "
                                       "false alarm by the truth (README, the alarm)")
def test_ditto_fast_leaves_the_alarm_quiet(ditto_fast):
    summary, _ = ditto_fast
    assert summary["alarm"]["alarm"] == "ok", summary["alarm"]


def test_ditto_fast_raises_the_truth_for_most_prompts(ditto_fast):
    """Measured: for 6 of 8 prompts."""
    _, gains = ditto_fast
    assert sum(g > 0 for g in gains) > len(gains) / 2, gains


@pytest.fixture(scope="module")
def temporal_world():
    """The world of the second shipped truth: its reward and its six judges."""
    from tunejury_align.reward.judges import load_judges

    reward = debug_reward(truth="temporal")
    return reward, load_judges("debug", reward)


def test_strong_ditto_games_the_reward_and_the_alarm_fires(reward, judges, tmp_path):
    """High learning rate, many iterations, no regulariser (in the spectral world it lowers the truth on all 8
    prompts: README): the reward keeps rising while the truth falls, and the alarm fires. The judges' mean tracks the truth better than the reward: its gain, in units of each
    score's own spread over plain samples, is nearer the truth's. The judges on the reward's encoders rise with it;
    those on other encoders do not (README "Held-out judges and the hacking alarm")."""
    strong = DittoConfig(preset="fast", learning_rate=0.5, iterations=30, noise_regularization=0.0)
    summary = ditto_run(reward, judges, PROMPTS[:1], strong, tmp_path / "strong")
    records = [json.loads(line) for line in (tmp_path / "strong" / "ditto.jsonl").read_text().splitlines()]
    rewards, truths = [r["reward"] for r in records], [r["truth"] for r in records]
    assert len(rewards) == 31 and all(math.isfinite(r) for r in rewards)
    assert rewards[-1] > rewards[0] and summary["mean_gain"] > 0  # the proxy climbs
    assert truths[-1] < truths[0], truths  # what it stands for does not
    assert summary["alarm"]["alarm"] == "hacking suspected", summary["alarm"]
    fired = {c["check"] for c in summary["alarm"]["checks"] if c["fires"]}
    assert "drift" in fired, summary["alarm"]
    judged = [c for c in summary["alarm"]["checks"] if c["check"] == "judges"]  # one check per kind of judge
    assert [(c["family"], len(c["judges"])) for c in judged] == [("the reward's encoders", 3), ("their own encoders", 3)]
    gains = judged[0]["standardised_gains"]
    shared, other = "judges_mean (the reward's encoders)", "judges_mean (their own encoders)"
    assert set(gains) == {"reward", "truth", "judges_mean", shared, other, *("judge_" + j.name for j in judges)}
    assert abs(gains["judges_mean"] - gains["truth"]) < abs(gains["reward"] - gains["truth"]), gains
    assert gains[other] < gains[shared], gains  # the judges off the optimiser's path climb less
    # on this one prompt their check does not fire (over 8 prompts it does: benchmarks/alarm_calibration.py)
    assert json.loads((tmp_path / "strong" / "summary.json").read_text())["alarm"] == summary["alarm"]


def test_expert_iteration_on_the_debug_config_raises_heldout_truth(reward, tmp_path):
    from tunejury_align import ExpertIterConfig, expert_iteration
    from tunejury_align.config import load_config

    config = load_config(ExpertIterConfig, "recipes/debug/expert_iter.yaml")
    heldout = [line.strip() for line in open("recipes/debug/heldout_prompts.txt") if line.strip()]
    rows = expert_iteration(load_generator("debug-musicgen"), reward, PROMPTS, config, out=tmp_path / "run",
                            heldout=heldout, scorers={"truth": truth})
    assert [r["round"] for r in rows] == [0, 1] and all(r["heldout"] for r in rows)
    assert rows[1]["eval_truth_mean"] > rows[0]["eval_truth_mean"], rows
