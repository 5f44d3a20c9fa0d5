"""MERT: the real config's fields in every fixture, the chunked conv stack (exact for MERT-v1's group
norm), the release protocol's segments and a strict checkpoint load."""

import functools
import json
import shutil

import pytest
import torch
from conftest import hub_snapshot, make_clip, mert_style_config

from tunejury_align.reward.head import CheckpointError
from tunejury_align.reward.mert import MERT_V1_FIELDS, MertEncoder
from tunejury_align.reward.tiny import seeded, tiny_mert_config

# MERT-v1-330M's config.json as on the hub (REFERENCE.md, "The real files"): pins MERT_V1_FIELDS, which
# every fixture is built from.
REAL_MERT_V1_330M_FIELDS = {
    "feat_extract_norm": "group", "do_stable_layer_norm": True, "feat_proj_layer_norm": True, "conv_bias": False,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2], "num_conv_pos_embedding_groups": 16,
    "hidden_act": "gelu", "feat_extract_activation": "gelu", "layer_norm_eps": 1e-5, "deepnorm": False,
    "attention_relax": 32.0, "feature_extractor_cqt": False, "sample_rate": 24000,
}


def non_size_fields(config) -> dict:
    """The fields of ``REAL_MERT_V1_330M_FIELDS`` from a ``HubertConfig`` or a ``config.json`` dict."""
    config = config if isinstance(config, dict) else config.to_dict()
    return {k: list(config[k]) if isinstance(config.get(k), tuple) else config.get(k, "<absent>")
            for k in REAL_MERT_V1_330M_FIELDS}


def test_the_package_constant_is_the_real_config():
    assert non_size_fields(MERT_V1_FIELDS) == REAL_MERT_V1_330M_FIELDS


@pytest.mark.parametrize("fixture", ["tiny", "fullsize", "conftest", "debug", "hub_cache", "loaded"])
def test_every_mert_fixture_copies_the_real_non_size_fields(fixture, request):
    if fixture == "tiny":
        config = tiny_mert_config()
    elif fixture == "fullsize":  # the benchmarks' MERT (benchmarks/ build it through fullsize_reward)
        from tunejury_align.reward.fullsize import mert_330m_config

        config = mert_330m_config()
    elif fixture == "conftest":
        config = mert_style_config(tiny_mert_config())
    elif fixture == "debug":
        config = request.getfixturevalue("components")[2].model.config
    elif fixture == "hub_cache":
        request.getfixturevalue("hub_cache")
        config = json.loads((hub_snapshot("m-a-p/MERT-v1-330M") / "config.json").read_text())
    else:
        config = request.getfixturevalue("reward").mert.model.config
    assert non_size_fields(config) == REAL_MERT_V1_330M_FIELDS
    hidden = config["hidden_size"] if isinstance(config, dict) else config.hidden_size
    assert hidden == 1024  # the head's MERT block is 1024-d


@functools.cache
def tiny_hubert(norm: str | None = None, seed: int = 0):
    """A tiny MERT-shaped ``HubertModel`` (eval); ``norm`` overrides ``feat_extract_norm`` on its config."""
    from transformers import HubertModel

    config = tiny_mert_config()
    if norm is not None:
        config.feat_extract_norm = norm
    with seeded(seed):
        return HubertModel(config).eval().requires_grad_(False)


def swelling_noise(seconds: float, batch: int = 2) -> torch.Tensor:
    """Noise whose level rises 20x over the clip: chunk-local GroupNorm statistics would be far off."""
    samples = int(seconds * 24_000)
    return make_clip(seconds, 24_000, "noise", channels=batch) * torch.linspace(0.1, 2.0, samples)


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("norm", ["group", "layer"])
@pytest.mark.parametrize("chunk", [None, 7, 0])  # CPU default (16 frames), 7 frames, whole segment (GPU-style)
@pytest.mark.parametrize("seconds", [0.0167, 0.7, 2.31])
def test_conv_features_equal_the_whole_segment_feature_extractor(norm, chunk, seconds):
    model = tiny_hubert(norm)
    encoder = MertEncoder(model, do_normalize=False, conv_chunk_frames=chunk)
    wave = swelling_noise(seconds)
    calls = []
    handle = model.feature_extractor.conv_layers[0].conv.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        ours = encoder.conv_features(wave)
    handle.remove()
    with torch.no_grad():
        expected = model.feature_extractor(wave)
    assert ours.shape == expected.shape
    assert relative_l2(ours, expected) <= 1e-5
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    frames = expected.shape[-1]
    if chunk == 0 or frames <= (chunk or 16):
        assert len(calls) == 1  # one pass of the stock module
    else:
        assert len(calls) > 2  # really chunked (for "group": a statistics pass, then the chunks)


@pytest.mark.parametrize("chunk", [None, 0])
def test_chunked_group_norm_gradients_equal_the_whole_segment_ones(chunk):
    model = tiny_hubert("group")
    encoder = MertEncoder(model, do_normalize=False, conv_chunk_frames=chunk)
    wave = swelling_noise(1.3).requires_grad_(True)
    weights = torch.randn(2, model.config.conv_dim[-1], 1, generator=torch.Generator().manual_seed(1))
    (ours,) = torch.autograd.grad((encoder.conv_features(wave) * weights).sum(), wave)
    (expected,) = torch.autograd.grad((model.feature_extractor(wave) * weights).sum(), wave)
    assert relative_l2(ours, expected) <= 1e-5


def test_full_size_conv_stack_chunks_equal_the_whole_segment():
    """MERT-v1-330M's real conv stack (512 channels x 7, group norm), a 3 s clip in 16-frame CPU chunks."""
    from transformers import HubertModel

    from tunejury_align.reward.fullsize import mert_330m_config

    config = mert_330m_config()
    config.num_hidden_layers = 1  # only the conv stack runs here
    with seeded(0):
        model = HubertModel(config).eval().requires_grad_(False)
    wave = swelling_noise(3.0, batch=1)
    with torch.no_grad():
        ours = MertEncoder(model, do_normalize=False).conv_features(wave)
        expected = model.feature_extractor(wave)
    assert relative_l2(ours, expected) <= 1e-5
    assert relative_l2(ours.mean(-1), expected.mean(-1)) <= 1e-5


def test_segments_merge_a_final_piece_shorter_than_one_second(components):
    mert = components[2]
    encoder = MertEncoder(mert.model, mert.do_normalize, segment_seconds=1.0)
    assert encoder.segments(60_000) == [(0, 24_000), (24_000, 60_000)]  # 1 s + 1.5 s (0.5 s tail merged)
    assert encoder.segments(71_999) == [(0, 24_000), (24_000, 71_999)]
    assert encoder.segments(72_000) == [(0, 24_000), (24_000, 48_000), (48_000, 72_000)]  # a 1 s tail stays
    assert encoder.segments(12_000) == [(0, 12_000)]  # a clip under 1 s is its own segment
    assert MertEncoder(mert.model, False).segments(300 * 24_000 + 23_999) == [(0, 300 * 24_000 + 23_999)]

    wave = make_clip(2.5, 24_000, "noise", channels=1) * torch.linspace(0.2, 1.5, 60_000)
    with torch.no_grad():
        first, merged, alone = (encoder._segment_features(wave[:, a:b])
                                for a, b in [(0, 24_000), (24_000, 60_000), (48_000, 60_000)])
        assert (first[1], merged[1]) == (74, 112)  # frame counts: the weights
        expected = (first[0] * 74 + merged[0] * 112) / (74 + 112)
        got = encoder(wave)
        torch.testing.assert_close(got, expected)
        middle = encoder._segment_features(wave[:, 24_000:48_000])
        scored_alone = (first[0] * 74 + middle[0] * 74 + alone[0] * alone[1]) / (148 + alone[1])
        dropped = (first[0] + middle[0]) / 2
        assert relative_l2(got, scored_alone) > 1e-3 and relative_l2(got, dropped) > 1e-3


@pytest.fixture()
def mert_folder(hub_cache, tmp_path):
    folder = tmp_path / "mert"
    shutil.copytree(hub_snapshot("m-a-p/MERT-v1-330M"), folder)
    return folder


def edit_weights(folder, edit) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    state = load_file(path)
    edit(state)
    save_file(state, path, metadata={"format": "pt"})


def test_mert_checkpoint_with_a_missing_weight_is_refused(mert_folder):
    edit_weights(mert_folder, lambda state: state.pop("encoder.layers.0.attention.q_proj.weight"))
    with pytest.raises(CheckpointError, match=r"1 missing weight\(s\): encoder\.layers\.0\.attention\.q_proj\.weight"):
        MertEncoder.from_pretrained(str(mert_folder))


def test_mert_checkpoint_with_an_unexpected_weight_is_refused(mert_folder):
    edit_weights(mert_folder, lambda state: state.update({"encoder.extra_head.weight": torch.zeros(4)}))
    with pytest.raises(CheckpointError, match=r"1 unexpected weight\(s\): encoder\.extra_head\.weight"):
        MertEncoder.from_pretrained(str(mert_folder))


def test_mert_checkpoint_may_carry_the_spec_augment_mask_vector(mert_folder, components):
    edit_weights(mert_folder, lambda state: state.update({"masked_spec_embed": torch.zeros(1024)}))
    loaded = MertEncoder.from_pretrained(str(mert_folder))
    for ours, theirs in zip(loaded.state_dict().values(), components[2].state_dict().values()):
        assert torch.equal(ours, theirs)


def test_mert_checkpoint_with_old_weight_norm_names_loads(mert_folder, components):
    """Older checkpoints store the positional conv's weight norm as weight_g / weight_v: transformers
    renames them on load, so the strict check sees them neither missing nor unexpected."""
    prefix = "encoder.pos_conv_embed.conv."

    def rename(state):
        state[prefix + "weight_g"] = state.pop(prefix + "parametrizations.weight.original0")
        state[prefix + "weight_v"] = state.pop(prefix + "parametrizations.weight.original1")

    edit_weights(mert_folder, rename)
    loaded = MertEncoder.from_pretrained(str(mert_folder))
    for ours, theirs in zip(loaded.state_dict().values(), components[2].state_dict().values()):
        assert torch.equal(ours, theirs)
