"""MusicGen adapter against transformers itself: greedy decoding (with and without classifier-free
guidance) against ``model.generate``, and the distribution :class:`SeededSampler` draws from against
transformers' own temperature / top-k / top-p warpers, in the order ``generate`` applies them."""

from __future__ import annotations

import itertools

import pytest
import torch

from tunejury_align.generators.musicgen import MusicGenGenerator, _logits_processor_classes, tiny_musicgen

PROMPTS = ["lofi hip hop beat with warm piano", "jazz trio"]  # different lengths: the batch is padded
VOCAB = 2048  # MusicGen's codebook size


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on the shared 2-core machine, thread contention makes tiny models ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = tiny_musicgen(seed=1)
    return model, tokenizer, MusicGenGenerator.from_model(model, tokenizer)


# -- greedy decoding ---------------------------------------------------------------------------
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_top_k_1_equals_transformers_greedy_generate(tiny, guidance_scale):
    """top_k=1 keeps only the best token, so our seeded sampler is greedy: the audio must be transformers'
    ``generate(do_sample=False)`` with the same guidance (the CFG processor runs before our sampler)."""
    model, tokenizer, generator = tiny
    duration = 0.3
    ours = generator.generate(PROMPTS, [1, 2], duration=duration, top_k=1, guidance_scale=guidance_scale)
    inputs = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():  # + num_codebooks - 1 steps for the delay pattern, as the adapter asks
        theirs = model.generate(**inputs, do_sample=False, guidance_scale=guidance_scale,
                                max_new_tokens=round(duration * generator.frame_rate) + generator.num_codebooks - 1)
    assert ours.shape == theirs.shape == (2, 1, int(duration * generator.sample_rate))
    torch.testing.assert_close(ours, theirs.clamp(-1.0, 1.0), atol=0, rtol=0)
    assert theirs.abs().max() > 1e-2  # audible, so the equality means something


def test_guidance_changes_the_greedy_audio(tiny):
    """The guidance 3 case above is not guidance 1 again."""
    _, _, generator = tiny
    unguided, guided = (generator.generate(PROMPTS[:1], [1], duration=0.3, top_k=1, guidance_scale=scale)
                        for scale in (1.0, 3.0))
    assert (guided - unguided).abs().max() > 1e-4


# -- the sampling distribution -----------------------------------------------------------------
def ours_distribution(scores: torch.Tensor, temperature: float, top_k: int, top_p: float, monkeypatch):
    """(rows, V) logits -> the (rows, V) distribution SeededSampler draws each row's token from (what it
    hands ``torch.multinomial``, normalised), checking that its output is one-hot at the drawn token."""
    sampler_class, _ = _logits_processor_classes()
    sampler = sampler_class([torch.Generator().manual_seed(0)], num_codebooks=4, temperature=temperature,
                            top_k=top_k, top_p=top_p)
    multinomial, seen = torch.multinomial, []

    def spy(probs, num_samples, **kwargs):
        drawn = multinomial(probs, num_samples, **kwargs)
        seen.append((probs.clone(), drawn))
        return drawn

    monkeypatch.setattr(torch, "multinomial", spy)
    out = sampler(None, scores.clone())
    monkeypatch.undo()
    probs, drawn = (torch.cat(parts) for parts in zip(*seen))
    assert torch.equal(out.argmax(-1, keepdim=True), drawn) and torch.isinf(out).sum() == out.numel() - len(out)
    return probs / probs.sum(-1, keepdim=True)


def transformers_distribution(model, scores: torch.Tensor, temperature: float, top_k: int, top_p: float):
    """softmax of the logits after the warpers transformers' ``generate(do_sample=True, ...)`` builds
    (``_get_logits_processor``), in its order. Our ``top_p=0`` means "no nucleus", i.e. transformers'
    ``top_p=1.0`` (transformers' own ``top_p=0.0`` keeps only the best token)."""
    from transformers import GenerationConfig, LogitsProcessorList

    config = GenerationConfig(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p or 1.0)
    processors = model._get_logits_processor(generation_config=config, input_ids_seq_length=1, encoder_input_ids=None,
                                             prefix_allowed_tokens_fn=None, logits_processor=LogitsProcessorList(),
                                             device="cpu")
    names = [type(p).__name__ for p in processors]
    expected = [name for name, used in (("TemperatureLogitsWarper", temperature != 1.0),
                                        ("TopKLogitsWarper", top_k != 0), ("TopPLogitsWarper", 0 < top_p < 1))
                if used]
    assert names == expected  # the order our sampler follows: temperature, top-k, top-p
    return processors(None, scores.clone()).softmax(-1)


def random_logits(rows: int = 64, seed: int = 0) -> torch.Tensor:
    """(rows, VOCAB) logits; row scales from flat (nucleus of hundreds of tokens) to peaked (a few)."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-0.5, 1.2, rows)[:, None]
    return torch.randn(rows, VOCAB, generator=generator) * scales


@pytest.mark.parametrize("top_k, top_p", list(itertools.product([0, 1, 50, 250], [0.0, 0.5, 0.9, 0.95])))
def test_sampling_distribution_equals_transformers_warpers(tiny, monkeypatch, top_k, top_p):
    model, _, _ = tiny
    scores = random_logits()
    for temperature in (0.7, 1.0, 1.3):
        ours = ours_distribution(scores, temperature, top_k, top_p, monkeypatch)
        theirs = transformers_distribution(model, scores, temperature, top_k, top_p)
        assert torch.equal(ours > 0, theirs > 0), f"other tokens kept at temperature {temperature}"
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
        kept = (ours > 0).sum(-1)
        if top_k:
            assert kept.max() <= top_k
    if top_p and top_k != 1:  # the nucleus does cut, to sizes that vary from row to row
        assert kept.min() < kept.max() < (top_k or VOCAB)


@pytest.mark.parametrize("top_k", [1, 50, 250])
def test_top_k_keeps_every_token_tied_with_the_kth_like_transformers(tiny, monkeypatch, top_k):
    """Ties at the k-th logit (common in half precision): both keep every tied token, more than k."""
    model, _, _ = tiny
    scores = torch.round(random_logits(seed=1) * 2)  # integer logits: many ties
    ours = ours_distribution(scores, 1.0, top_k, 0.0, monkeypatch)
    theirs = transformers_distribution(model, scores, 1.0, top_k, 0.0)
    assert torch.equal(ours > 0, theirs > 0) and (ours > 0).sum(-1).max() > top_k
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_top_p_with_ties_keeps_the_same_probabilities(tiny, monkeypatch):
    """Tied tokens straddling the nucleus edge (not on it): both keep the same number of them and so the
    same probabilities. Which of the equally likely tokens is kept is up to each one's sort."""
    model, _, _ = tiny
    scores = torch.full((1, VOCAB), -100.0)
    scores[0, 7] = 1.0  # p = e / (e + 3) = 0.475, and 0.175 for each of three tied tokens:
    scores[0, [100, 900, 1500]] = 0.0  # top_p 0.6 needs token 7 and one tied token (0.65 > 0.6)
    ours = ours_distribution(scores, 1.0, 0, 0.6, monkeypatch)
    theirs = transformers_distribution(model, scores, 1.0, 0, 0.6)
    assert (ours > 0).sum() == (theirs > 0).sum() == 2 and ours[0, 7] > 0 and theirs[0, 7] > 0
    torch.testing.assert_close(ours.sort(-1).values, theirs.sort(-1).values, atol=1e-6, rtol=1e-5)


# The sampler runs transformers' own TopPLogitsWarper: at an exact tie on the top-p boundary it keeps
# the smallest set whose mass reaches top_p, as transformers does (our earlier rule kept both tokens).
def test_top_p_boundary_equals_transformers(tiny, monkeypatch):
    model, _, _ = tiny
    scores = torch.full((1, VOCAB), -100.0)  # exp(-105) underflows: the two tied tokens hold exactly 0.5 each
    scores[0, [3, 70]] = 5.0
    ours = ours_distribution(scores, 1.0, 0, 0.5, monkeypatch)
    theirs = transformers_distribution(model, scores, 1.0, 0, 0.5)
    assert (ours > 0).sum() == (theirs > 0).sum()


# -- the special token ids -----------------------------------------------------------------------
@pytest.mark.parametrize("build", ["tiny", "debug", "musicgen-small"])
def test_special_ids_are_vocab_size_and_have_their_embedding_row(build, caplog, tmp_path):
    """MusicGen's pad / bos / decoder-start id is ``vocab_size`` by design (facebook/musicgen-small: 2048, its
    codebooks 0-2047): every decoder embedding holds ``vocab_size + 1`` rows, the last for that id. transformers'
    composite-config check calls it outside the vocabulary; we drop exactly that message around our own config
    building and loading, and nothing else."""
    import logging

    from tunejury_align.generators.musicgen import debug_musicgen, musicgen_small_model, special_ids_accepted

    if build == "musicgen-small":  # built on the meta device: the real shapes without the 2 GB of weights
        with torch.device("meta"):
            model, _ = musicgen_small_model()
    else:
        model = tiny_musicgen(seed=1)[0] if build == "tiny" else debug_musicgen().model
    decoder = model.config.decoder
    assert decoder.pad_token_id == decoder.bos_token_id == decoder.decoder_start_token_id == decoder.vocab_size
    assert model.generation_config.pad_token_id == model.generation_config.decoder_start_token_id == decoder.vocab_size
    for embedding in model.decoder.model.decoder.embed_tokens:
        assert embedding.num_embeddings == decoder.vocab_size + 1
    if build != "tiny":
        return
    model.save_pretrained(tmp_path)  # the user's path: from_pretrained of a local folder
    tokenizer = tiny_musicgen(seed=1)[1]
    tokenizer.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="transformers"):
        MusicGenGenerator.from_pretrained(str(tmp_path))
    assert not [r for r in caplog.records if "token_id" in r.getMessage()], caplog.records
    # the filter drops only the id equal to vocab_size: another out-of-vocabulary id still warns
    from tunejury_align.generators.musicgen import _SpecialIdsAtVocabSize

    rule = _SpecialIdsAtVocabSize()
    message = ("Model config: pad_token_id must be `None` or an integer within the vocabulary (between 0 and 63), "
               "got {}. This may result in unexpected behavior.")
    record = lambda value: logging.LogRecord("transformers.configuration_utils", logging.WARNING, "", 0,  # noqa: E731
                                             message.format(value), None, None)
    assert not rule.filter(record(64)) and rule.filter(record(65)) and rule.filter(record(-1))
    logger = logging.getLogger("transformers.configuration_utils")
    before = list(logger.filters)
    with special_ids_accepted():
        assert len(logger.filters) == len(before) + 1
    assert logger.filters == before  # only around our own config building and loading
