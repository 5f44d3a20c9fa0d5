"""The debug generators hear the prompt (issue 29): the world-quality criteria of
:mod:`tunejury_align.debug.hearing`, asserted on every debug family, and the tokenizers that spell out words
they have never seen."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tunejury_align.debug.hearing import (
    HEARING_PROMPTS,
    MAX_CROSS_SEED,
    PROMPT_MARGIN,
    hearing_failures,
    hearing_table,
    measure_hearing,
)
from tunejury_align.generators import load_generator

FAMILIES = ("debug-musicgen", "debug-stable-audio", "debug-audioldm2")
BATCH = {"debug-musicgen": 64, "debug-stable-audio": 8, "debug-audioldm2": 16}
UNKNOWN = HEARING_PROMPTS[4:]  # words in no shipped list
KNOWN = HEARING_PROMPTS[:4]


@pytest.fixture(scope="module")
def generators():
    return {name: load_generator(name) for name in FAMILIES}


@pytest.fixture(scope="module")
def hearing(generators):
    return {name: measure_hearing(generators[name], batch=BATCH[name]) for name in FAMILIES}


@pytest.mark.parametrize("name", [
    "debug-musicgen", "debug-stable-audio",
    pytest.param("debug-audioldm2", marks=pytest.mark.xfail(strict=True, reason=(
        "the debug AudioLDM 2 does not hear the prompt yet: its UNet adds no prompt-dependent term that depends on "
        "the noise, and its VAE decoder makes one seed's mel much like another's (cross-prompt 1.0, cross-seed "
        "0.75); see the README's debug world section"))),
])
def test_every_debug_family_meets_the_hearing_criteria(hearing, name):
    table = hearing[name]
    assert table["clips"] == 64
    assert table["identical_pairs"] == 0
    assert table["cross_seed"] <= MAX_CROSS_SEED
    assert table["cross_prompt"] <= table["cross_seed"] + PROMPT_MARGIN
    assert table["flagged_share"] <= 0.01, table
    assert table["failures"] == []


@pytest.mark.parametrize("name", FAMILIES)
def test_plain_clips_raise_no_exploit_flag(hearing, name):
    assert hearing[name]["flagged_share"] <= 0.01
    assert -35.0 < hearing[name]["rms_dbfs_median"] < -8.0  # audible, with headroom


@pytest.mark.parametrize("name", FAMILIES)
def test_an_unknown_word_prompt_and_a_known_word_prompt_differ(generators, name):
    generator = generators[name]
    audio = generator.generate([KNOWN[0], UNKNOWN[0], UNKNOWN[1]], [3, 3, 3])
    assert not torch.equal(audio[0], audio[1])
    assert not torch.equal(audio[1], audio[2])  # two prompts of unknown words are two prompts
    assert float((audio[1] - audio[2]).abs().max()) > 1e-4


@pytest.mark.parametrize("name", ["debug-musicgen", "debug-stable-audio"])
def test_the_tiny_tokenizers_spell_out_words_they_do_not_hold(generators, name):
    tokenizer = generators[name].tokenizer if hasattr(generators[name], "tokenizer") else generators[name].pipe.tokenizer
    for prompt in HEARING_PROMPTS:
        ids = tokenizer(prompt)["input_ids"]
        assert tokenizer.unk_token_id not in ids, (prompt, tokenizer.convert_ids_to_tokens(ids))
    assert tokenizer("celtic fiddle reel")["input_ids"] != tokenizer("gentle harp lullaby")["input_ids"]


def test_the_criteria_catch_a_deaf_generator():
    rng = np.random.default_rng(0)
    seeds = torch.as_tensor(rng.standard_normal((8, 1, 4000)), dtype=torch.float32) * 0.05
    deaf = seeds.repeat(8, 1, 1)  # every prompt gives its seed's clip
    table = hearing_table(deaf, 16_000, prompts=8, seeds=8)
    assert table["identical_pairs"] == 8 * 28 and table["cross_prompt"] > 0.99
    assert len(hearing_failures(table)) == 2
    offset = hearing_table(torch.as_tensor(rng.standard_normal((64, 1, 4000)), dtype=torch.float32) * 0.05 + 0.1,
                           16_000, prompts=8, seeds=8)
    assert offset["dc_offset_share"] == 1.0 and any("exploit flag" in f for f in hearing_failures(offset))
