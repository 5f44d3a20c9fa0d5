"""The ``debug`` reward: tiny seeded random models of the real architectures, built in-process.

Like audiocraft's ``get_pretrained('debug')``: every command runs offline on a fresh install, in
seconds. Its scores mean nothing and are labelled ``debug`` wherever they are printed or saved.
It never touches the network or the Hugging Face cache. ``TuneJuryReward.from_pretrained("debug")``
(or :func:`tunejury_align.reward.debug_reward`) assembles the reward from these components.
"""

from __future__ import annotations

import torch

from .clap import ClapEncoder
from .head import TuneJuryHead
from .mert import MertEncoder
from .tiny import TINY_HTSAT, seeded, tiny_mert_config, tiny_roberta_config, tiny_roberta_tokenizer

DEBUG_SEED = 1234


def build_debug_components(seed: int = DEBUG_SEED):
    """(head, clap, mert) tiny random models; the same ``seed`` gives the same weights."""
    from transformers import HubertModel

    tokenizer = tiny_roberta_tokenizer()
    with seeded(seed), torch.no_grad():
        head = TuneJuryHead(2048)
        for module in head.net:
            if isinstance(module, torch.nn.BatchNorm1d):  # plausible running statistics
                module.running_mean.normal_(0.0, 0.02)
                module.running_var.uniform_(0.5, 2.0)
        head.net[-1].weight.mul_(40.0)  # spread the random scores over a visible range (~±1)
        clap = ClapEncoder(TINY_HTSAT, tiny_roberta_config(len(tokenizer)), tokenizer)
        mert = HubertModel(tiny_mert_config())
    encoder = MertEncoder.from_model(mert, do_normalize=True)
    # the CPU defaults (one clip per pass, the conv stack in chunks) suit the full-size MERT, whose activations
    # then stay in cache; the tiny one is far faster in batches and one conv pass (measured: 8.6 vs 14.9 ms a
    # 2 s clip, 12 clips, 2 threads), with the same features to float rounding
    encoder.micro_batch, encoder.conv_chunk_frames = 16, 0
    return head.eval(), clap.eval(), encoder
