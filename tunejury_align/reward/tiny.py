"""Tiny, seeded, random-weight models of the reward's real architectures.

Used by the in-process ``debug`` reward (audiocraft's ``get_pretrained('debug')`` idea) and by the
tests, which save them in the libraries' own formats and load them back through the user path.
Nothing here touches the network or the Hugging Face cache.
"""

from __future__ import annotations

from ..tiny_tokenizers import DEBUG_CORPUS, seeded, tiny_roberta_tokenizer

__all__ = ["DEBUG_CORPUS", "TINY_HTSAT", "seeded", "tiny_mert_config", "tiny_roberta_config",
           "tiny_roberta_tokenizer"]

TINY_HTSAT = dict(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=8, num_classes=527)


def tiny_roberta_config(vocab_size: int):
    """roberta-base's config (the CLAP text tower's) with its non-size fields as released -- width 768,
    which LAION-CLAP's text projection requires, ``layer_norm_eps`` 1e-5, GELU, absolute positions --
    and tiny depth, FFN, vocabulary and position counts."""
    from transformers import RobertaConfig

    return RobertaConfig(vocab_size=vocab_size, hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                         intermediate_size=64, max_position_embeddings=80, type_vocab_size=1,
                         layer_norm_eps=1e-5, hidden_act="gelu", position_embedding_type="absolute",
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
