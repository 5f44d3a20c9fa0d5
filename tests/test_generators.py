"""Generators loaded the way a user loads them: hub ids (temporary offline cache) and local folders."""

import pytest
import torch
from conftest import hub_snapshot

from tunejury_align.generators import detect_family, load_generator
from tunejury_align.generators.audiocraft import AudiocraftGenerator
from tunejury_align.generators.musicgen import MusicGenGenerator, tiny_musicgen
from tunejury_align.hub import ModelNotFoundError


@pytest.fixture(scope="module")
def musicgen_hub():
    model, tokenizer = tiny_musicgen(seed=1)
    for repo in ("facebook/musicgen-small",):
        folder = hub_snapshot(repo)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return model


def test_musicgen_loads_from_hub_id_and_local_folder(musicgen_hub, tmp_path):
    generator = load_generator("facebook/musicgen-small")
    assert isinstance(generator, MusicGenGenerator) and generator.name == "facebook/musicgen-small"
    assert generator.sample_rate == 32_000 and not generator.is_debug
    musicgen_hub.save_pretrained(tmp_path / "mg")
    generator.tokenizer.save_pretrained(tmp_path / "mg")
    local = load_generator(str(tmp_path / "mg"))
    a = generator.generate(["lofi hip hop"], [7], duration=0.5)
    b = local.generate(["lofi hip hop"], [7], duration=0.5)
    assert a.shape == (1, 1, 16_000)  # exactly 0.5 s at 32 kHz
    torch.testing.assert_close(a, b)


def test_musicgen_candidate_is_a_function_of_prompt_and_seed(musicgen_hub):
    generator = load_generator("facebook/musicgen-small")
    together = generator.generate(["jazz trio", "epic orchestral", "jazz trio"], [3, 4, 5], duration=0.4,
                                  max_batch_size=3)
    alone = generator.generate(["jazz trio"], [5], duration=0.4)
    companions = generator.generate(["ambient synth pad", "jazz trio"], [9, 5], duration=0.4, max_batch_size=2)
    torch.testing.assert_close(together[2], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(companions[1], alone[0], atol=1e-5, rtol=0)
    assert (together[0] - together[2]).abs().max() > 1e-3  # another seed, another candidate
    state = torch.get_rng_state()
    generator.generate(["x"], [1], duration=0.2)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is never used


def test_musicgen_sampling_options_are_honoured(musicgen_hub):
    generator = load_generator("facebook/musicgen-small")
    greedy_like = generator.generate(["x", "x"], [1, 2], duration=0.3, top_k=1, guidance_scale=1.0)
    torch.testing.assert_close(greedy_like[0], greedy_like[1])  # top_k=1: seeds no longer matter
    with pytest.raises(ValueError, match="temperature"):
        generator.generate(["x"], [1], temperature=0.0)
    with pytest.raises(TypeError):
        generator.generate(["x"], [1], steps=3)


@pytest.mark.parametrize("family, repo, builder", [
    ("stable-audio", "stabilityai/stable-audio-open-1.0", "tiny_stable_audio"),
    ("audioldm2", "cvssp/audioldm2-music", "tiny_audioldm2"),
])
def test_diffusion_generators_load_from_hub_ids(family, repo, builder):
    import importlib

    module = importlib.import_module(f"tunejury_align.generators.{family.replace('-', '_')}")
    getattr(module, builder)(seed=0).save_pretrained(hub_snapshot(repo))
    assert detect_family(repo) == family
    generator = load_generator(repo)
    assert generator.name == repo and not generator.is_debug
    audio = generator.generate(["lofi hip hop"], [1], steps=2, duration=1.0)
    assert audio.ndim == 3 and torch.isfinite(audio).all() and audio.abs().max() <= 1.0


def test_debug_names_and_unknown_generators():
    assert load_generator("debug").name == "debug-musicgen"
    assert load_generator("debug", debug_default="debug-stable-audio").name == "debug-stable-audio"
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download"):
        load_generator("facebook/musicgen-giant")
    with pytest.raises(ModelNotFoundError, match="neither a local folder"):
        load_generator("not a model")


class StandInAudiocraft:
    """Exactly the documented surface of audiocraft's MusicGen (audiocraft cannot be installed here)."""

    sample_rate = 32_000

    def __init__(self):
        self.params = {}

    def set_generation_params(self, **params):
        self.params = params

    def generate(self, descriptions):
        length = int(self.params.get("duration", 1.0) * self.sample_rate)
        return torch.stack([torch.randn(1, length) * 0.1 for _ in descriptions])  # global RNG, like audiocraft


def test_audiocraft_wrapper_seeds_each_candidate():
    generator = AudiocraftGenerator(StandInAudiocraft(), generation_params={"duration": 0.25, "top_k": 250})
    batch = generator.generate(["a", "b", "c"], [1, 2, 1])
    torch.testing.assert_close(batch[0], batch[2])
    torch.testing.assert_close(generator.generate(["z"], [2])[0], batch[1])
    assert generator.model.params == {"duration": 0.25, "top_k": 250}
    with pytest.raises(TypeError, match="lacks 'sample_rate'"):
        AudiocraftGenerator(object())
