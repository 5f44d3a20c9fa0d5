"""Stable Audio adapter: a tiny real-architecture pipeline saved and reloaded offline, seed purity,
the unrolled loop against ``StableAudioPipeline.__call__``, gradients to the initial noise."""

from __future__ import annotations

import pytest
import torch
from conftest import forward_calls, saved_for_backward

from tunejury_align.generators.base import Generator, item_generators
from tunejury_align.generators.stable_audio import (
    StableAudioGenerator,
    StableAudioOptions,
    debug_stable_audio,
    tiny_stable_audio,
)
from tunejury_align.hub import ModelNotFoundError

PROMPTS = ["lofi hip hop beat with warm piano", "epic orchestral soundtrack", "a calm acoustic guitar melody"]
FAST = {"steps": 4, "duration": 1.5}

pytestmark = pytest.mark.filterwarnings("ignore:Should have t:UserWarning")  # torchsde, from pipe(...)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread, as in the AudioLDM2 and DITTO tests: on the shared 2-core machine, thread
    contention made these tiny models ~7x slower. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("stable-audio") / "tiny-stable-audio"
    tiny_stable_audio(seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def generator(saved_tiny):
    generator = StableAudioGenerator.from_pretrained(str(saved_tiny))
    generator.pipe.set_progress_bar_config(disable=True)
    return generator


def test_reloaded_generator_outputs_audio(generator, saved_tiny):
    assert isinstance(generator, Generator)
    assert generator.sample_rate == 44_100 and generator.family == "stable-audio"
    assert generator.name == str(saved_tiny) and not generator.is_debug
    audio = generator.generate(PROMPTS[:2], [1, 2], **FAST)
    assert audio.shape == (2, 2, int(1.5 * 44_100)) and audio.dtype == torch.float32
    assert torch.isfinite(audio).all() and audio.abs().max() <= 1.0 and audio.abs().max() > 0
    info = generator.info()
    assert info["family"] == "stable-audio" and set(info["versions"]) >= {"torch", "diffusers", "transformers"}


def test_candidate_is_a_function_of_its_prompt_and_seed(generator):
    together = generator.generate(PROMPTS, [5, 6, 7], max_batch_size=3, **FAST)
    one_by_one = generator.generate(PROMPTS, [5, 6, 7], max_batch_size=1, **FAST)
    other_companions = generator.generate([PROMPTS[0], PROMPTS[1]], [9, 6], max_batch_size=2, **FAST)
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=0)
    torch.testing.assert_close(together[1], other_companions[1], atol=1e-5, rtol=0)
    assert not torch.allclose(together[0], other_companions[0], atol=1e-3)  # another seed, other audio


@pytest.mark.parametrize("guidance_scale, negative_prompt", [(7.0, ""), (7.0, "low quality drums"), (1.0, "")])
def test_unrolled_loop_equals_pipeline(generator, guidance_scale, negative_prompt):
    """Same prompts, seeds and per-item generators: the pipeline draws its latents and seeds its
    Brownian trees (SDE noise) from them exactly as generate()/sample() do."""
    prompts, seeds = PROMPTS[:2], [3, 4]
    options = StableAudioOptions(guidance_scale=guidance_scale, negative_prompt=negative_prompt, **FAST)
    with torch.no_grad():
        ours = generator.sample(prompts, generator.initial_noise(seeds), noise_seeds=seeds, options=options)
    theirs = generator.pipe(prompts, audio_end_in_s=1.5, num_inference_steps=4, guidance_scale=guidance_scale,
                            negative_prompt=[negative_prompt] * 2 if negative_prompt else None,
                            generator=item_generators(seeds)).audios
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_gradients_reach_initial_noise_and_checkpointing_agrees(generator):
    options = generator.options(**FAST)
    seeds = [1, 2]
    results = []
    for checkpoint_steps in (False, True):
        noise = generator.initial_noise(seeds).requires_grad_(True)
        audio = generator.sample(PROMPTS[:2], noise, noise_seeds=seeds, options=options,
                                 checkpoint_steps=checkpoint_steps)
        audio.pow(2).mean().backward()
        results.append((audio.detach(), noise.grad))
    (audio, grad), (audio_ckpt, grad_ckpt) = results
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
    torch.testing.assert_close(audio_ckpt, audio, atol=1e-6, rtol=0)
    # relative to the gradient's scale (latents start at sigma_max = 500, so d(loss)/d(noise) is small)
    assert (grad_ckpt - grad).abs().max() <= 1e-5 * grad.abs().max()
    assert all(p.grad is None for p in generator.pipe.transformer.parameters())  # frozen model


def test_checkpointing_recomputes_each_step_in_backward(generator):
    """checkpoint_steps=True runs, not only agrees: in backward the transformer is called again once per
    sampler step (never without checkpointing), and backward keeps only each step's input latents."""
    options = generator.options(**FAST)  # 4 steps, guidance 7: one batched transformer call per step
    seeds = [1, 2]
    calls_in, kept = {}, {}
    for checkpoint_steps in (False, True):
        noise = generator.initial_noise(seeds).requires_grad_(True)
        with forward_calls(generator.pipe.transformer) as calls:
            with saved_for_backward() as saved:
                latents = generator.sample(PROMPTS[:2], noise, noise_seeds=seeds, options=options,
                                           checkpoint_steps=checkpoint_steps, decode=False)
            in_forward = calls[0]
            latents.pow(2).sum().backward()
        calls_in[checkpoint_steps] = {"forward": in_forward, "backward": calls[0] - in_forward}
        kept[checkpoint_steps] = saved[0]
        assert torch.isfinite(noise.grad).all() and noise.grad.abs().max() > 0
    assert calls_in == {False: {"forward": 4, "backward": 0}, True: {"forward": 4, "backward": 4}}
    step_inputs = options.steps * noise.numel() * noise.element_size()  # (B, C, L) float32 per step
    assert kept[True] <= step_inputs + 1024  # + a few scheduler scalars (the SDE step stays outside)
    assert kept[False] > 100 * kept[True]  # the transformer's activations of every step


def test_missing_model_raises_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download"):
        StableAudioGenerator.from_pretrained(str(tmp_path / "no-such-model"))
    with pytest.raises(ModelNotFoundError, match="stabilityai/stable-audio-open-1.0"):
        StableAudioGenerator.from_pretrained("stabilityai/stable-audio-open-1.0")  # not in the offline cache


def test_debug_generator_defaults_and_rng(generator):
    rng_before = torch.get_rng_state()
    debug = debug_stable_audio(seed=0)
    audio = debug.generate(PROMPTS[:1], [0])
    assert torch.equal(torch.get_rng_state(), rng_before)  # neither the build nor sampling touch the global RNG
    assert debug.is_debug and debug.name == "debug-stable-audio" and debug.options().steps == 4
    assert audio.shape == (1, 2, int(2.0 * debug.sample_rate))
    assert debug.max_duration == pytest.approx(44 * 2048 / 44_100)  # its window: just over the 2 s clips


def test_options_are_validated(generator):
    with pytest.raises(ValueError, match="steps"):
        StableAudioOptions(steps=0)
    with pytest.raises(ValueError, match="guidance_scale"):
        StableAudioOptions(guidance_scale=0.5)
    with pytest.raises(TypeError):
        generator.generate(PROMPTS[:1], [0], temperature=1.0)
    with pytest.raises(ValueError, match="duration"):
        generator.generate(PROMPTS[:1], [0], steps=2, duration=generator.max_duration + 1)
    with pytest.raises(ValueError, match="seeds"):
        generator.generate(PROMPTS[:2], [0])
