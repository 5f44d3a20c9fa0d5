"""AudioLDM 2 adapter: a tiny real-architecture pipeline saved and reloaded through the user path,
seed purity, the unrolled DDIM loop against diffusers' own pipeline, and gradients to the noise."""

from __future__ import annotations

import pytest
import torch
from conftest import forward_calls, saved_for_backward

from tunejury_align.generators.audioldm2 import (
    AudioLDM2Generator,
    AudioLDM2Options,
    debug_audioldm2,
    tiny_audioldm2,
)
from tunejury_align.hub import ModelNotFoundError

FAST = dict(steps=2, duration=1.0)
PROMPTS = ["lofi hip hop beat", "a calm acoustic guitar melody with soft strings", "jazz"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions gain nothing from threads; on a shared 2-core machine, thread
    oversubscription made this file 4x slower. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("audioldm2") / "tiny-audioldm2"
    tiny_audioldm2(seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def generator(saved_dir):
    return AudioLDM2Generator.from_pretrained(str(saved_dir))


@pytest.fixture(scope="module")
def reference_pipe(generator):
    """The same modules in a stock ``AudioLDM2Pipeline`` whose language model is a GPT2LMHeadModel
    (diffusers 0.42's ``generate_language_model`` needs GenerationMixin, which GPT2Model lacks)."""
    from diffusers import AudioLDM2Pipeline
    from transformers import GPT2LMHeadModel

    gpt2 = generator.pipe.language_model
    with torch.random.fork_rng(devices=[]):
        language_model = GPT2LMHeadModel(gpt2.config).eval()
    language_model.transformer = gpt2
    pipe = AudioLDM2Pipeline(**{**generator.pipe.components, "language_model": language_model})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_reload_and_generate(generator):
    assert generator.sample_rate == 16_000 and generator.family == "audioldm2" and not generator.is_debug
    audio = generator.generate(PROMPTS, [0, 1, 2], **FAST)
    assert audio.shape == (3, 1, 16_000) and audio.dtype == torch.float32
    assert torch.isfinite(audio).all() and audio.abs().max() <= 1.0
    assert audio.abs().max() > 1e-3  # the tiny vocoder is audible, so comparisons below mean something
    info = generator.info()
    assert info["family"] == "audioldm2" and {"torch", "diffusers", "transformers"} <= set(info["versions"])


def test_candidate_depends_only_on_its_prompt_and_seed(generator):
    together = generator.generate(PROMPTS, [5, 6, 7], max_batch_size=3, **FAST)
    alone = generator.generate(PROMPTS, [5, 6, 7], max_batch_size=1, **FAST)
    companions = generator.generate(["epic orchestral soundtrack with brass and drums", PROMPTS[0]], [11, 5],
                                    max_batch_size=2, **FAST)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(companions[1], together[0], rtol=0, atol=1e-5)
    assert (together[0] - generator.generate(PROMPTS[:1], [6], **FAST)[0]).abs().max() > 1e-3  # the seed matters


def test_initial_noise_is_per_seed(generator):
    noise = generator.initial_noise([3, 4], duration=1.0)
    assert noise.shape == (2, 4, 50, 8)
    torch.testing.assert_close(generator.initial_noise([4], duration=1.0)[0], noise[1], rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")  # diffusers' own GPT-2 call
@pytest.mark.parametrize("guidance_scale, negative_prompt", [(3.5, ""), (2.0, "slow and spacious"), (1.0, "")])
def test_unrolled_loop_matches_pipeline(generator, reference_pipe, guidance_scale, negative_prompt):
    prompts = ["lofi hip hop beat", "soft strings jazz trio"]  # equal T5 lengths: the pipeline pads to the longest
    lengths = {len(generator.pipe.tokenizer_2(p).input_ids) for p in prompts}
    assert len(lengths) == 1
    noise = generator.initial_noise([1, 2], duration=1.0)
    options = AudioLDM2Options(steps=3, guidance_scale=guidance_scale, duration=1.0, negative_prompt=negative_prompt)
    with torch.no_grad():
        ours = generator.sample(prompts, noise, options=options)
    expected = reference_pipe(prompts, latents=noise.clone(), num_inference_steps=3, guidance_scale=guidance_scale,
                              negative_prompt=[negative_prompt] * 2 if negative_prompt else None,
                              audio_length_in_s=1.0, output_type="pt").audios
    assert ours.shape == (2, 1, expected.shape[-1])
    torch.testing.assert_close(ours[:, 0], expected, rtol=0, atol=1e-5)
    # the same loop over the GPT2LMHeadModel-holding pipeline gives the same audio
    with torch.no_grad():
        via_lm_head = AudioLDM2Generator.from_pipeline(reference_pipe).sample(prompts, noise, options=options)
    torch.testing.assert_close(via_lm_head, ours, rtol=0, atol=1e-5)


def test_gradients_reach_initial_noise_and_checkpointing_agrees(generator):
    options = AudioLDM2Options(steps=2, duration=1.0)
    weights = torch.randn(2, 1, 16_000, generator=torch.Generator().manual_seed(0))
    grads = []
    for checkpoint_steps in (False, True):
        noise = generator.initial_noise([1, 2], duration=1.0).requires_grad_(True)
        audio = generator.sample(PROMPTS[:2], noise, options=options, checkpoint_steps=checkpoint_steps)
        (audio * weights).sum().backward()
        grads.append(noise.grad)
    assert torch.isfinite(grads[0]).all() and grads[0].abs().max() > 1e-4
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-5)
    assert all(p.grad is None for p in generator.pipe.unet.parameters())  # frozen: no parameter gradients


def test_checkpointing_recomputes_each_step_in_backward(generator):
    """checkpoint_steps=True runs, not only agrees: in backward the UNet is called again once per DDIM
    step (never without checkpointing), and backward keeps only each step's input latents."""
    options = AudioLDM2Options(steps=3, duration=1.0)  # guidance 3.5: one batched UNet call per step
    calls_in, kept = {}, {}
    for checkpoint_steps in (False, True):
        noise = generator.initial_noise([1, 2], duration=1.0).requires_grad_(True)
        with forward_calls(generator.pipe.unet) as calls:
            with saved_for_backward() as saved:
                latents = generator.sample(PROMPTS[:2], noise, options=options, checkpoint_steps=checkpoint_steps,
                                           decode=False)
            in_forward = calls[0]
            latents.pow(2).sum().backward()
        calls_in[checkpoint_steps] = {"forward": in_forward, "backward": calls[0] - in_forward}
        kept[checkpoint_steps] = saved[0]
        assert torch.isfinite(noise.grad).all() and noise.grad.abs().max() > 0
    assert calls_in == {False: {"forward": 3, "backward": 0}, True: {"forward": 3, "backward": 3}}
    step_inputs = options.steps * noise.numel() * noise.element_size()  # (B, C, H, W) float32 per step
    assert kept[True] <= step_inputs + 1024  # the DDIM update is inside the checkpoint too
    assert kept[False] > 100 * kept[True]  # the UNet's activations of every step


def test_options_and_shapes_are_checked(generator):
    with pytest.raises(ValueError):
        AudioLDM2Options(steps=0)
    with pytest.raises(ValueError):
        AudioLDM2Options(duration=-1.0)
    with pytest.raises(TypeError):
        generator.generate(["jazz"], [0], not_an_option=1)
    with pytest.raises(ValueError, match="initial_noise has shape"):
        generator.sample(["jazz"], torch.zeros(1, 4, 10, 8), options=AudioLDM2Options(**FAST))
    with pytest.raises(ValueError, match="duration must be >="):
        generator.initial_noise([0], duration=0.001)


def test_missing_model_raises(tmp_path):
    for name in [str(tmp_path / "no-such-model"), "nobody/no-such-audioldm2"]:
        with pytest.raises(ModelNotFoundError, match="huggingface-cli download") as err:
            AudioLDM2Generator.from_pretrained(name)
        assert name in str(err.value)


def test_debug_generator_defaults_to_two_steps():
    generator = debug_audioldm2(seed=0)
    assert generator.is_debug and generator.name == "debug-audioldm2"
    assert generator.options().steps == 2 and generator.options(steps=5).steps == 5
    audio = generator.generate(["jazz trio"], [0])
    assert audio.shape == (1, 1, 16_000)
