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
from tunejury_align.debug.proxy import ProxySpec, _entry, cache_dir
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
    path = _entry("proxy-head", __import__("dataclasses").asdict(spec))
    assert path.parent == cache_dir() and path.is_file()  # built once by the fixture, reused after
    again = debug_reward()
    for name, value in reward.head.state_dict().items():
        assert torch.equal(value, again.head.state_dict()[name])
    assert _entry("proxy-head", __import__("dataclasses").asdict(ProxySpec(head_seed=1))) != path


def test_proxy_accuracy_against_the_truth_on_fresh_clips(reward):
    prompts = list(TRAIN_PROMPTS[:8]) + list(HELDOUT_PROMPTS)  # seen and unseen prompts, unseen seeds
    fresh = world_samples(reward.features, prompts, 3, first_seed=70_000)
    with torch.no_grad():
        accuracy = pairwise_accuracy_vs_truth(reward.head(fresh.features), fresh)
    assert 0.62 <= accuracy <= 0.80, accuracy


# --- the recipes, measured against the truth ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["debug-musicgen", "debug-stable-audio"])
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
    """A DITTO run folder on debug Stable Audio with the truth and the debug judges recorded (as `align ditto
    --judges debug` runs it); returns its summary, with the alarm."""
    from tunejury_align.recipes.ditto_run import ditto_run_meta, run_ditto
    from tunejury_align.reward.judges import judge_scorers

    generator = load_generator("debug-stable-audio")
    meta = {**ditto_run_meta(config, prompts, generator, reward), "judges": [j.info() for j in judges]}
    return run_ditto(generator, reward, prompts, config, out, meta,
                     scorers={"truth": truth, **judge_scorers(reward, judges)})


def test_debug_judges_are_held_out_heads_of_the_world(reward, judges):
    from tunejury_align.reward.judges import judge_scorers

    assert [j.name for j in judges] == ["debug-leave-musicgen", "debug-leave-stable-audio", "debug-leave-audioldm2",
                                        "debug-alt-leave-musicgen", "debug-alt-leave-stable-audio",
                                        "debug-alt-leave-audioldm2"]
    weights = [torch.cat([p.flatten() for p in j.head.parameters()]) for j in judges]
    assert not torch.equal(weights[0], weights[1])  # other seeds, other left-out generator
    alt = [j for j in judges if j.own_encoders]
    assert [j.name for j in alt] == [j.name for j in judges[3:]]
    for judge in alt:  # the same tiny architectures, other weights
        mine, theirs = dict(judge.model.mert.named_parameters()), dict(reward.mert.named_parameters())
        assert mine.keys() == theirs.keys() and not all(torch.equal(mine[k], theirs[k]) for k in mine)
    # the reward and the judges on its features: one pass of its encoders; each other judge: one of its own
    generator = load_generator("debug-stable-audio")
    audio, prompts = generator.generate(PROMPTS[:2], [0, 1]), PROMPTS[:2]
    encoders = [m for r in (reward, *(j.model for j in alt)) for m in (r.clap.audio_branch, r.mert)]
    with forward_calls(*encoders) as calls, torch.no_grad():
        scores = reward(audio, generator.sample_rate, prompts)
        judged = {n: fn(audio, generator.sample_rate, prompts) for n, fn in judge_scorers(reward, judges).items()}
    assert calls == [1] * 8
    with torch.no_grad():
        assert torch.allclose(judged["judge_" + alt[0].name], alt[0].model(audio, generator.sample_rate, prompts))
    assert torch.isfinite(scores).all() and len(judged) == 6


def test_ditto_fast_raises_the_truth_for_most_prompts_and_the_alarm_stays_ok(reward, judges, tmp_path):
    summary = ditto_run(reward, judges, PROMPTS, DittoConfig(preset="fast"), tmp_path / "fast")
    gains = [r["optimised_truth"] - r["baseline_truth"] for r in summary["per_prompt"]]
    assert sum(g > 0 for g in gains) > len(gains) / 2, gains
    assert summary["alarm"]["alarm"] == "ok", summary["alarm"]


def test_strong_ditto_games_the_reward_and_the_alarm_fires(reward, judges, tmp_path):
    """High learning rate, many iterations, no regulariser: the reward keeps rising while the truth falls, and the
    alarm fires. The judges' mean tracks the truth better than the reward: its gain, in units of each score's own
    spread over plain samples, is nearer the truth's. The judges on the reward's encoders rise with it; those on
    other encoders do not, and their check fires (README "Held-out judges and the hacking alarm")."""
    strong = DittoConfig(preset="fast", learning_rate=0.5, iterations=30, noise_regularization=0.0)
    summary = ditto_run(reward, judges, PROMPTS[:1], strong, tmp_path / "strong")
    records = [json.loads(line) for line in (tmp_path / "strong" / "ditto.jsonl").read_text().splitlines()]
    rewards, truths = [r["reward"] for r in records], [r["truth"] for r in records]
    assert len(rewards) == 31 and all(math.isfinite(r) for r in rewards)
    assert rewards[-1] > rewards[0] + 1.0 and summary["mean_gain"] > 0  # the proxy climbs
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
    assert judged[1]["fires"] and judged[1]["judges_gain"] < 0 < judged[1]["reward_gain"], judged  # they catch it
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
