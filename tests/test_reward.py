"""TuneJuryReward loaded from (temporary, offline) hub ids: equivalences, determinism, gradients."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import hub_snapshot, make_clip

from tunejury_align.hub import ModelNotFoundError
from tunejury_align.reward import AudioError, TuneJuryReward
from tunejury_align.reward.clap import CLAP_WINDOW
from tunejury_align.reward.head import CheckpointError


def test_loads_every_component_from_the_hub_ids(reward, components):
    head, clap, mert = components
    assert reward.spec.blocks == ("clap_audio", "mert", "text")
    assert not reward.training and not any(p.requires_grad for p in reward.parameters())
    for ours, theirs in ((reward.head, head), (reward.clap, clap), (reward.mert, mert)):
        mine, ref = ours.state_dict(), theirs.state_dict()
        assert mine.keys() == ref.keys()
        assert all(torch.equal(mine[k], ref[k]) for k in mine)
    assert reward.mert.do_normalize  # read from preprocessor_config.json
    assert len(reward.info.checkpoint_sha256) == 64 and not reward.is_debug


def test_tensor_path_equals_file_path(reward, tmp_path):
    clip = make_clip(3.0, 44_100, "chord")
    path = tmp_path / "clip.wav"
    sf.write(path, clip.T.numpy(), 44_100, subtype="FLOAT")
    from_file = reward.score_files([path], ["lofi hip hop"])[0]
    with torch.no_grad():
        from_tensor = float(reward(clip.unsqueeze(0), 44_100, ["lofi hip hop"])[0])
    assert abs(from_file - from_tensor) <= 1e-5


def test_batch_equals_single_calls(reward):
    clips = torch.stack([make_clip(2.0, 32_000, kind, seed=i) for i, kind in enumerate(["tone", "chord", "noise"])])
    prompts = ["jazz piano", "", "epic orchestral soundtrack"]
    with torch.no_grad():
        batched = reward(clips, 32_000, prompts)
        single = torch.cat([reward(clips[i:i + 1], 32_000, [prompts[i]]) for i in range(3)])
    assert batched.shape == (3,)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seconds", [4.0, 13.0])
def test_same_clip_scores_identically_every_call(reward, seconds):
    clip = make_clip(seconds, 16_000, "noise").unsqueeze(0)
    with torch.no_grad():
        scores = [float(reward(clip, 16_000, "ambient")[0]) for _ in range(3)]
    assert scores[0] == scores[1] == scores[2]


def test_long_clip_uses_the_centre_window(reward):
    # Changing audio outside the centre 10 s window must not change the CLAP block.
    clip = make_clip(14.0, 48_000, "noise").unsqueeze(0)
    edited = clip.clone()
    edited[..., :48_000] = 0.0  # first second lies outside the centre 10 s of 14 s
    with torch.no_grad():
        a = reward.clap.embed_audio(reward.clap_window(clip.mean(1), 48_000))
        b = reward.clap.embed_audio(reward.clap_window(edited.mean(1), 48_000))
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_gradients_reach_the_input_audio(reward):
    clip = make_clip(2.0, 44_100, "chord").unsqueeze(0).repeat(2, 1, 1).requires_grad_(True)
    scores = reward(clip, 44_100, ["lofi", ""])
    scores.sum().backward()
    assert clip.grad is not None and torch.isfinite(clip.grad).all()
    assert clip.grad.abs().sum(dim=(1, 2)).min() > 0  # every batch item gets a gradient
    assert not any(p.grad is not None for p in reward.parameters())  # the reward stays frozen


def test_empty_prompt_uses_a_zero_text_block(reward):
    clip = make_clip(2.0, 24_000, "tone").unsqueeze(0)
    with torch.no_grad():
        features = reward.features(clip.repeat(3, 1, 1), 24_000, ["", None, "jazz"])
        assert torch.equal(features[0, -512:], torch.zeros(512))
        assert torch.equal(features[1, -512:], torch.zeros(512))
        assert features[2, -512:].abs().sum() > 0
        # and the empty prompt is not CLAP(""): the block is zero, not an embedding of ""
        assert reward.clap.embed_text([""]).abs().sum() > 0
        assert float(reward(clip, 24_000, None)[0]) == float(reward(clip, 24_000, "")[0])


def test_text_embeddings_are_cached(reward):
    reward._text_cache.clear()
    reward.text_embeddings(["a", "b", "a", ""])
    assert set(reward._text_cache) == {"a", "b"}


def test_any_rate_and_channel_count(reward):
    mono = make_clip(2.0, 22_050, "chord", channels=1)
    stereo = mono.repeat(2, 1)
    with torch.no_grad():
        torch.testing.assert_close(reward(mono[None], 22_050), reward(stereo[None], 22_050))
        assert torch.isfinite(reward(make_clip(1.0, 8_000, "tone", channels=6)[None], 8_000)).all()


def test_release_and_train_protocols_differ_and_are_deterministic(hub_cache, reward):
    train = TuneJuryReward.from_pretrained("TuneJury/tunejury", protocol="train")
    clip = make_clip(11.0, 44_100, "noise").unsqueeze(0)  # > 10 s: no repeat-pad seams in the window
    with torch.no_grad():
        a, b = float(train(clip, 44_100)[0]), float(train(clip, 44_100)[0])
        assert a == b
        assert a != float(reward(clip, 44_100)[0])
        # train protocol: band-limited to 8 kHz (16 kHz sampling) and not int16-rounded
        spectrum = torch.fft.rfft(train.clap_window(clip.mean(1), 44_100)[0]).abs()
        freqs = torch.fft.rfftfreq(CLAP_WINDOW, 1 / 48_000)
        assert spectrum[freqs > 9_000].mean() < 0.01 * spectrum[(freqs > 1_000) & (freqs < 7_000)].mean()
        release = torch.fft.rfft(reward.clap_window(clip.mean(1), 44_100)[0]).abs()
        assert release[freqs > 9_000].mean() > 0.5 * release[(freqs > 1_000) & (freqs < 7_000)].mean()


def test_release_protocol_rounds_to_int16(reward):
    clip = make_clip(2.0, 48_000, "noise").unsqueeze(0).mean(1)
    window = reward.clap_window(clip, 48_000)
    steps = window * 32767.0
    torch.testing.assert_close(steps, steps.round(), atol=1e-3, rtol=0)


def test_clap_only_variant_loads_without_mert(hub_cache):
    a1 = TuneJuryReward.from_pretrained("TuneJury/tunejury/A1_clap_audio_only.pt")
    assert a1.spec.blocks == ("clap_audio",) and a1.mert is None
    with torch.no_grad():
        assert a1.features(make_clip(1.0, 48_000)[None], 48_000, "x").shape == (1, 512)


def test_local_folder_and_file_load_like_the_hub(hub_cache, tmp_path, tmp_copy, reward):
    path = tmp_copy(hub_snapshot("TuneJury/tunejury") / "tunejury.pt")
    from_file = TuneJuryReward.from_pretrained(str(path))
    from_dir = TuneJuryReward.from_pretrained(str(tmp_path))
    clip = make_clip(1.0, 48_000)[None]
    with torch.no_grad():
        expected = reward(clip, 48_000, "x")
        assert torch.equal(from_file(clip, 48_000, "x"), expected)
        assert torch.equal(from_dir(clip, 48_000, "x"), expected)


def test_missing_models_are_named(hub_cache, tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"'TuneJury/absent'.*huggingface-cli download"):
        TuneJuryReward.from_pretrained("TuneJury/absent")
    with pytest.raises(ModelNotFoundError, match="MERT"):
        TuneJuryReward.from_pretrained("TuneJury/tunejury", mert="m-a-p/not-cached")
    with pytest.raises(ModelNotFoundError, match="CLAP checkpoint"):
        TuneJuryReward.from_pretrained("TuneJury/tunejury", clap=str(tmp_path / "nope.pt"))
    with pytest.raises(ModelNotFoundError, match="folder .* has no 'tunejury.pt'"):
        TuneJuryReward.from_pretrained(str(tmp_path))


def test_tokenizer_without_its_vocabulary_is_refused(hub_cache, tmp_path, components):
    _, clap, _ = components
    folder = tmp_path / "roberta"
    clap.text_branch.config.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = 50265  # a real roberta-base config next to a tiny vocabulary
    (folder / "config.json").write_text(json.dumps(config))
    clap.tokenizer.save_pretrained(folder)
    with pytest.raises(ModelNotFoundError, match="tokenizer .* has 300 tokens but its model expects 50265"):
        TuneJuryReward.from_pretrained("TuneJury/tunejury", text_model=str(folder))


def test_cqt_mert_is_refused(hub_cache, tmp_path):
    import shutil

    folder = tmp_path / "mert"
    shutil.copytree(hub_snapshot("m-a-p/MERT-v1-330M"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["feature_extractor_cqt"] = True
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="feature_extractor_cqt"):
        TuneJuryReward.from_pretrained("TuneJury/tunejury", mert=str(folder))


@pytest.mark.parametrize(
    "audio, message",
    [
        (torch.zeros(2, 48_000), r"shape \(B, C, T\).*unsqueeze"),
        (torch.zeros(1, 1, 0), "empty"),
        (torch.zeros(1, 1, 100, dtype=torch.int16), "floating point"),
        (torch.tensor([[[0.0, float("nan")] * 500]]).repeat(2, 1, 1)[[0, 1]], r"NaN or Inf .* \[0, 1\]"),
        (torch.cat([torch.zeros(1, 1, 1000), torch.full((1, 1, 1000), float("inf"))]), r"NaN or Inf .* \[1\]"),
    ],
)
def test_bad_audio_is_refused(reward, audio, message):
    with pytest.raises(AudioError, match=message):
        reward(audio, 48_000)


def test_bad_sample_rate_and_prompt_count(reward):
    clip = make_clip(1.0, 48_000)[None]
    with pytest.raises(AudioError, match="sample_rate"):
        reward(clip, 0)
    with pytest.raises(ValueError, match="2 prompts for a batch of 1"):
        reward(clip, 48_000, ["a", "b"])


def test_bad_files_are_refused(reward, tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"RIFF....")
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), dtype=np.float32), 16_000)
    sf.write(tmp_path / "nan.wav", np.full((1000, 1), np.nan, dtype=np.float32), 16_000, subtype="FLOAT")
    for name, message in [("junk.wav", "cannot read"), ("empty.wav", "no samples"), ("nan.wav", "NaN"),
                          ("missing.wav", "no such file")]:
        with pytest.raises(AudioError, match=message):
            reward.score_files([tmp_path / name])


def test_deepnorm_scales_residuals(components):
    from transformers import HubertModel

    from tunejury_align.reward.mert import MertEncoder
    from tunejury_align.reward.tiny import tiny_mert_config

    config = tiny_mert_config()
    config.do_stable_layer_norm = False
    config.deepnorm = True
    torch.manual_seed(0)
    model = HubertModel(config)
    plain_layer_out = None
    layer = model.encoder.layers[0]
    x = torch.randn(1, 5, config.hidden_size)
    with torch.no_grad():
        plain_layer_out = layer(x)
        encoder = MertEncoder.from_model(model, do_normalize=False)
        alpha = (2.0 * config.num_hidden_layers) ** 0.25
        attn = layer.attention(x)[0]
        h = layer.layer_norm(alpha * x + attn)
        expected = layer.final_layer_norm(alpha * h + layer.feed_forward(h))
        torch.testing.assert_close(encoder.model.encoder.layers[0](x), expected)
        assert not torch.allclose(plain_layer_out, expected)


def test_bfloat16_scores_track_float32(hub_cache, reward):
    bf16 = TuneJuryReward.from_pretrained("TuneJury/tunejury", dtype=torch.bfloat16)
    assert bf16.head.net[0].weight.dtype == torch.float32
    assert next(bf16.mert.parameters()).dtype == torch.bfloat16
    clips = torch.stack([make_clip(2.0, 48_000, k, seed=i) for i, k in enumerate(["tone", "chord", "noise"])])
    with torch.no_grad():
        # measured here (torch 2.14.1, CPU): |bf16 - fp32| = 0.0066 / 0.0029 / 0.0059 on scores 0.43 / 0.36 / 0.20
        torch.testing.assert_close(bf16(clips, 48_000, "x"), reward(clips, 48_000, "x"), atol=0.02, rtol=0.0)


@pytest.mark.parametrize("seconds", [0.0167, 0.7, 2.31])
def test_chunked_mert_equals_the_plain_hubert_forward(reward, seconds):
    wave = make_clip(seconds, 24_000, "noise", channels=2)
    with torch.no_grad():
        expected = reward.mert.model(wave).last_hidden_state
        torch.testing.assert_close(reward.mert.hidden_states(wave), expected, atol=1e-5, rtol=1e-5)
