"""Particle steering (FK / SMC): the resampling maths, and the two identities on the tiny diffusion models:
K = 1 without resampling is the plain sampler, resampling with lambda = 0 is best-of-K."""

import numpy as np
import pytest
import torch

from tunejury_align.generators import load_generator
from tunejury_align.recipes.best_of_n import BestOfNConfig, best_of_n
from tunejury_align.recipes.smc import SMCConfig, smc
from tunejury_align.recipes.smc_particles import (
    assign_slots,
    effective_sample_size,
    log_potential,
    systematic_counts,
)

PROMPT = ["calm solo piano"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["stable-audio", "audioldm2"])
def generator(request):
    """The debug world's voiced models (their clips vary audibly with the noise), shortened."""
    generator = load_generator(f"debug-{request.param}")
    generator.default_options.update(steps=4 if request.param == "stable-audio" else 3, duration=0.5)
    return generator


def loudness(audio, sample_rate, prompts):
    """Level in dB: differences of a few dB between the tiny models' clips."""
    return 10 * torch.log10(audio.pow(2).mean(dim=(1, 2)) + 1e-12)


def test_potentials_ess_and_systematic_resampling_by_hand():
    history = np.array([[1.0, 3.0], [2.0, 1.0]])
    np.testing.assert_allclose(log_potential("difference", history, 2.0), [4.0, -2.0])
    np.testing.assert_allclose(log_potential("max", history, 2.0), [6.0, 4.0])
    np.testing.assert_allclose(log_potential("sum", history, 0.5), [2.0, 1.5])
    assert effective_sample_size(np.zeros(5)) == pytest.approx(5.0)
    assert effective_sample_size(np.array([0.0, -np.inf, -np.inf])) == pytest.approx(1.0)
    # weights 0.5, 0.25, 0.25, 0 with offset 0.1: positions 0.025, 0.275, 0.525, 0.775 -> 0, 0, 1, 2
    counts = systematic_counts(np.log([0.5, 0.25, 0.25, 1e-300]), 0.1)
    assert counts.tolist() == [2, 1, 1, 0]
    ancestors, fresh = assign_slots(counts)
    assert ancestors.tolist() == [0, 1, 2, 0] and fresh == [False, False, False, True]
    assert systematic_counts(np.full(7, 3.2), 0.999).tolist() == [1] * 7  # equal weights: one copy each


def test_difference_weights_multiply_and_max_weights_are_the_potential_itself():
    from tunejury_align.recipes.smc import ParticleWeights

    for potential, expected in (("difference", [3.0, 1.0]), ("max", [3.0, 2.0]), ("sum", [4.0, 3.0])):
        rewards = iter([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 1.0])])
        config = SMCConfig(particles=2, potential=potential, temperature=1.0, ess_threshold=0.0)
        weights = ParticleWeights(config, 0, steps=5, seeds=[42, 43], score=lambda x0, rewards=rewards: next(rewards))
        assert weights(0, None) is None and weights(1, None) is None  # never resampled (threshold 0)
        np.testing.assert_allclose(weights.log_weights, expected)  # difference: (1 - 0) + (3 - 1), (2 - 0) + (1 - 2)
    assert [r["step"] for r in weights.trace] == [0, 1] and weights(4, None) is None  # the last step: no scoring


def test_one_particle_without_resampling_is_the_plain_sampler(generator):
    plain = generator.generate(PROMPT, [42])
    result = smc(generator, loudness, PROMPT, SMCConfig(particles=1, ess_threshold=0.0, eta=0.0))
    steered = result.prompts[0]
    assert torch.equal(steered.audio, plain) and steered.chosen == 0
    assert [r["step"] for r in steered.trace] == list(range(generator.options().steps - 1))  # scored, not resampled
    assert all("ancestors" not in r for r in steered.trace)


def test_resampling_with_lambda_zero_is_best_of_k(generator):
    config = SMCConfig(particles=4, temperature=0.0, ess_threshold=1.0, eta=0.0)
    steered = smc(generator, loudness, PROMPT, config).prompts[0]
    assert all(r["ancestors"] == [0, 1, 2, 3] for r in steered.trace) and steered.trace  # it did resample
    bon = best_of_n(generator, loudness, PROMPT, config=BestOfNConfig(n=4, bootstrap=0))
    assert torch.equal(steered.audio, generator.generate(PROMPT * 4, [42, 43, 44, 45]))
    torch.testing.assert_close(steered.rewards, torch.tensor(bon.scores[0], dtype=torch.float32), rtol=0, atol=1e-6)
    assert steered.chosen == bon.winners[0] and torch.equal(steered.chosen_audio, bon.winner_audio[0])


def test_strong_steering_resamples_to_the_best_line_and_the_copies_diverge(generator):
    config = SMCConfig(particles=4, temperature=1e4, ess_threshold=1.0, resample_every=1, eta=1.0,
                       generation={"steps": 5})
    steered = smc(generator, loudness, PROMPT, config).prompts[0]
    first = steered.trace[0]
    assert first["ancestors"] == [int(np.argmax(first["rewards"]))] * 4  # lambda huge: all copies of the best
    assert first["ess"] == pytest.approx(1.0)
    later = steered.trace[2]["rewards"]  # two steps after the copies were made, their fresh noise shows
    assert len(set(later)) == 4
    assert steered.compute.generator_passes == 5 * 4 and steered.compute.reward_calls == 4 * 4 + 4
    assert steered.compute.pass_unit == "nfe"


def test_a_rerun_is_identical_and_the_intermediate_decode_can_be_shorter(generator):
    config = SMCConfig(particles=3, temperature=50.0, ess_threshold=1.0, eta=1.0, intermediate_seconds=0.2)
    first = smc(generator, loudness, PROMPT, config).prompts[0]
    again = smc(generator, loudness, PROMPT, config).prompts[0]
    assert torch.equal(first.audio, again.audio) and first.trace == again.trace


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="potential must be one of"):
        SMCConfig(potential="min")
    with pytest.raises(ValueError, match="ess_threshold"):
        SMCConfig(ess_threshold=2.0)
    with pytest.raises(TypeError, match="diffusion generator"):
        smc(load_generator("debug-musicgen"), loudness, PROMPT)


def test_every_shipped_smc_and_pruned_yaml_parses():
    from pathlib import Path

    from tunejury_align.config import load_config

    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "recipes").rglob("smc.yaml"))
    assert {p.parent.name for p in files} == {"stable-audio", "audioldm2", "debug"}
    for path in files:
        assert load_config(SMCConfig, path).particles >= 1 and "align smc --config" in path.read_text()
    pruned = root / "recipes/musicgen/best_of_n_pruned.yaml"
    assert load_config(BestOfNConfig, pruned).prune and "align best-of-n --prune" in pruned.read_text()
