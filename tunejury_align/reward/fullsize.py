"""Full-size architectures of the reward's encoders with random weights, for benchmarks.

Compute does not depend on weight values, so speed and memory measured on these stand for the
released models. (HTSAT-base + RoBERTa-base CLAP tower, MERT-v1-330M-shaped HuBERT, 2048-d head.)
"""

from __future__ import annotations

from .clap import ClapEncoder
from .head import HeadSpec, TuneJuryHead
from .mert import MERT_V1_FIELDS, MertEncoder
from .model import RewardInfo, TuneJuryReward
from .tiny import seeded, tiny_roberta_tokenizer

HTSAT_BASE = dict(embed_dim=128, depths=[2, 2, 12, 2], num_heads=[4, 8, 16, 32], window_size=8, num_classes=527)


def mert_330m_config():
    """MERT-v1-330M's config: its non-size fields (``mert.MERT_V1_FIELDS``) and its real sizes."""
    from transformers import HubertConfig

    return HubertConfig(
        **MERT_V1_FIELDS,
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        conv_dim=(512,) * 7, num_conv_pos_embeddings=128,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
    )


def fullsize_reward(seed: int = 0, protocol: str = "release", device=None, dtype=None) -> TuneJuryReward:
    """A reward of the released shapes with random weights (labelled debug: its scores mean nothing)."""
    from transformers import HubertModel, RobertaConfig

    tokenizer = tiny_roberta_tokenizer()  # token ids < 300 are valid for the 50,265-row embedding
    with seeded(seed):
        head = TuneJuryHead(2048).eval()
        clap = ClapEncoder(HTSAT_BASE, RobertaConfig(), tokenizer).eval()
        mert = MertEncoder.from_model(HubertModel(mert_330m_config()), do_normalize=False)
    info = RewardInfo(reward="fullsize-random", checkpoint_sha256=None, clap="random", mert="random",
                      protocol=protocol, debug=True)
    reward = TuneJuryReward(head, HeadSpec(()), clap, mert, info=info, protocol=protocol)
    return reward.to(device=device, dtype=dtype) if (device or dtype) else reward
