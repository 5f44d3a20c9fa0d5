"""Tiny tokenizers of the real classes, built in-process (no hub, no sentencepiece files), and a
seeded RNG context: the shared parts of the debug models (reward and generators) and of the tests.
"""

from __future__ import annotations

import json

import torch

DEBUG_CORPUS = [
    "lofi hip hop beat with warm piano chords",
    "high quality instrumental music, upbeat electronic dance track",
    "a calm acoustic guitar melody with soft strings",
    "epic orchestral soundtrack with brass and drums",
    "jazz trio with double bass, brushed drums and piano",
    "ambient synth pad, slow and spacious",
]

#: stable-audio-open-1.0's tokenizer truncates at 128 tokens (its T5 conditioner's ``max_length``, from which diffusers'
#: conversion script sets ``model_max_length``), and the pipeline pads every prompt to that length
STABLE_AUDIO_T5_MAX_LENGTH = 128
#: the tiny Stable Audio T5's vocabulary (kept as it was when the debug world was measured)
STABLE_AUDIO_VOCAB_TEXT = [
    "high quality instrumental music lofi hip hop beat with warm piano chords",
    "upbeat electronic dance track epic orchestral soundtrack with brass and drums",
    "a calm acoustic guitar melody with soft strings jazz trio double bass brushed",
    "ambient synth pad slow and spacious rock metal pop funk the of hammer hitting wooden surface",
]


def words_of(lines: list[str]) -> list[str]:
    """The sorted distinct lower-case words of ``lines`` (commas split words)."""
    return sorted({w for line in lines for w in line.lower().replace(",", " ").split()})


def tiny_roberta_tokenizer(vocab_size: int = 300):
    """A byte-level BPE ``RobertaTokenizer`` trained in-process on :data:`DEBUG_CORPUS` (deterministic)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(DEBUG_CORPUS * 4, trainer=trainer)
    saved = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in saved["merges"]]
    return RobertaTokenizer(vocab=saved["vocab"], merges=merges)


#: the single characters every tiny Unigram tokenizer holds, so that any prompt of them (words it has never seen
#: included) becomes a sequence of its own, as sentencepiece's character pieces make of any text
CHARACTERS = ("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.,;:!?'\"-_/&()+%#@*"
              "\u00e0\u00e1\u00e2\u00e4\u00e7\u00e8\u00e9\u00ea\u00eb\u00ed\u00ee\u00ef\u00f1\u00f3"
              "\u00f4\u00f6\u00fa\u00fb\u00fc\u00df")


def tiny_t5_tokenizer(words: list[str], space_score: float, max_length: int):
    """A Unigram ``T5Tokenizer`` from a word list (no sentencepiece file): whole words, then single characters
    (:data:`CHARACTERS`: letters of both cases, digits, punctuation, common accented letters), so that a word it
    does not hold is spelled out rather than lost."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", space_score)]
    pieces += [("\u2581" + w, -1.0) for w in words] + [(c, -5.0) for c in CHARACTERS]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def tiny_word_tokenizer(words: list[str], max_length: int = 64):
    """A word-level ``PreTrainedTokenizerFast`` (pad 0, eos 1, unk 2) over ``words``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=max_length)


class seeded:  # noqa: N801 (a context manager used like a function)
    """``with seeded(seed):`` a fork of torch's CPU RNG seeded with ``seed`` (the caller's RNG untouched)."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._fork = torch.random.fork_rng(devices=[])

    def __enter__(self):
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        return self._fork.__exit__(*exc)
