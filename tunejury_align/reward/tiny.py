"""Tiny, seeded, random-weight models of the reward's real architectures.

Used by the in-process ``debug`` reward (audiocraft's ``get_pretrained('debug')`` idea) and by the
tests, which save them in the libraries' own formats and load them back through the user path.
Nothing here touches the network or the Hugging Face cache.
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

TINY_HTSAT = dict(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=8, num_classes=527)


def tiny_roberta_tokenizer(vocab_size: int = 300):
    """A byte-level BPE RoBERTa tokenizer trained in-process on a few sentences (deterministic)."""
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


def tiny_roberta_config(vocab_size: int):
    from transformers import RobertaConfig

    return RobertaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=80, type_vocab_size=1,
                         pad_token_id=1, bos_token_id=0, eos_token_id=2)


def tiny_mert_config():
    """A HuBERT config with MERT-v1-330M's non-size fields (``mert.MERT_V1_FIELDS``), tiny widths."""
    from transformers import HubertConfig

    from .mert import MERT_V1_FIELDS

    return HubertConfig(
        **MERT_V1_FIELDS,
        # width 1024 as in MERT-v1-330M: the head's MERT block is 1024-d
        hidden_size=1024, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=4,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
        layerdrop=0.0, mask_time_prob=0.0, apply_spec_augment=False,
    )


def seeded(seed: int):
    """Context manager: a fork of torch's global RNG seeded with ``seed`` (caller's RNG untouched)."""
    devices: list = []
    context = torch.random.fork_rng(devices=devices)

    class _Seeded:
        def __enter__(self):
            context.__enter__()
            torch.manual_seed(seed)

        def __exit__(self, *exc):
            return context.__exit__(*exc)

    return _Seeded()
