"""Feature extraction (cached, resumable) and RankNet head training into the released layout."""

import json
import shutil

import pytest
import soundfile as sf
import torch
from conftest import make_clip
from test_calibration import align

from tunejury_align.reward import TuneJuryReward, load_head
from tunejury_align.reward.calibration import read_pairs
from tunejury_align.reward.features import (
    FeatureCache,
    FeatureFileError,
    PairFeatures,
    extract_pair_features,
    extraction_meta,
)
from tunejury_align.reward.head import HeadSpec
from tunejury_align.reward.training import HeadTrainingConfig, save_head_checkpoint, train_head, train_head_on_features

CLAP_ONLY = HeadSpec(("mert", "text"))


def separable_features(items: int = 60, pairs: int = 300, seed: int = 0) -> PairFeatures:
    """CLAP-audio-only features carrying each item's quality on 8 dims (+ noise); pairs differ in quality
    by > 0.3 and the winner is the better one (every 25th pair a tie)."""
    generator = torch.Generator().manual_seed(seed)
    quality = torch.randn(items, generator=generator)
    clap = 0.3 * torch.randn(items, 512, generator=generator)
    clap[:, :8] += quality[:, None]
    pair_a = torch.randint(items, (4 * pairs,), generator=generator)
    pair_b = torch.randint(items, (4 * pairs,), generator=generator)
    keep = (quality[pair_a] - quality[pair_b]).abs() > 0.3
    pair_a, pair_b = pair_a[keep][:pairs], pair_b[keep][:pairs]
    target = (quality[pair_a] > quality[pair_b]).float()
    target[::25] = 0.5
    return PairFeatures(blocks={"clap_audio": clap}, files=[f"{i}.wav" for i in range(items)],
                        sha256=[str(i) for i in range(items)], prompts=[""], pair_a=pair_a, pair_b=pair_b,
                        pair_prompt=torch.zeros(len(pair_a), dtype=torch.long), target=target)


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny MLP trains faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FAST = dict(lr=1e-3, train_batch_size=64, max_epochs=20, patience=5, exclude=["mert", "text"])


def test_training_reaches_high_accuracy_and_reloads_into_the_reward(hub_cache, tmp_path):
    features = separable_features()
    result = train_head_on_features(features, HeadTrainingConfig(**FAST))
    assert result.monitored == "val_loss" and result.train_accuracy > 0.9 and result.val_accuracy > 0.9
    assert 1 <= result.best_epoch <= result.epochs <= 20
    assert result.history[result.best_epoch - 1]["val_loss"] == result.best_loss
    path = save_head_checkpoint(result.head, result.spec, tmp_path / "mine.pt", training=result.summary())
    assert json.loads((tmp_path / "mine.pt.json").read_text()) == {"input_dim": 512, "exclude": ["mert", "text"]}
    state = torch.load(path, weights_only=True)
    assert set(state) == set(result.head.state_dict())  # a plain state_dict, the released keys
    head, spec = load_head(path)
    assert spec == CLAP_ONLY
    inputs_a, _ = features.inputs(spec)
    assert torch.equal(head(inputs_a[:8]), result.head(inputs_a[:8]))
    reward = TuneJuryReward.from_pretrained(str(path))  # CLAP from the (test) hub cache, no MERT
    assert reward.spec == CLAP_ONLY and reward.mert is None
    assert torch.equal(reward.head(inputs_a[:8]), result.head(inputs_a[:8]))


def test_training_is_seeded_and_leaves_the_global_rng_alone():
    features = separable_features(items=30, pairs=60)
    inputs_a, inputs_b = features.inputs(CLAP_ONLY)
    config = HeadTrainingConfig(**{**FAST, "max_epochs": 3})
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    first = train_head(inputs_a, inputs_b, features.target, config)
    assert torch.equal(torch.rand(1), expected_next)
    second = train_head(inputs_a, inputs_b, features.target, config)
    assert first.history == second.history
    with pytest.raises(ValueError, match=r"\(M, 2048\)"):
        train_head(inputs_a, inputs_b, features.target, HeadTrainingConfig())
    with pytest.raises(ValueError, match="unknown feature block"):
        HeadTrainingConfig(exclude=["lyrics"])


def write_pairs(folder):
    folder.mkdir()
    kinds = {"a.wav": "tone", "b.wav": "chord", "c.wav": "noise"}
    for name, kind in kinds.items():
        sf.write(folder / name, make_clip(1.0, 16_000, kind, seed=1).T.numpy(), 16_000)
    shutil.copy(folder / "a.wav", folder / "a_copy.wav")  # same content: one cache entry
    rows = [("a.wav", "b.wav", "jazz", "A"), ("b.wav", "c.wav", "", "tie"), ("c.wav", "a_copy.wav", "jazz", "B"),
            ("a.wav", "missing.wav", "", "A")]
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps({"audio_a": a, "audio_b": b, "prompt": p, "winner": w,
                                        "system_a": "s1", "system_b": "s2"}) + "\n" for a, b, p, w in rows))
    return path


def test_extracted_features_match_the_reward_and_resume(reward, tmp_path):
    pairs = read_pairs(write_pairs(tmp_path / "clips"))
    cache = tmp_path / "cache"

    def stop_after_two(_):
        stop_after_two.calls += 1
        if stop_after_two.calls == 2:
            raise KeyboardInterrupt

    stop_after_two.calls = 0
    with pytest.raises(KeyboardInterrupt):  # killed after two files: both already flushed
        extract_pair_features(reward, pairs, cache, save_every=1, progress=stop_after_two)
    features, report = extract_pair_features(reward, pairs, cache, save_every=1)
    assert (report.files, report.from_cache, report.computed) == (5, 3, 1)  # a, b, then a_copy by content hash
    assert "missing.wav" in next(iter(report.failures)) and len(report.dropped_pairs) == 1
    assert report.pairs == len(features) == 3 and features.target.tolist() == [1.0, 0.5, 0.0]
    assert sorted(features.blocks) == ["clap_audio", "mert", "text"] and features.prompts == ["jazz", ""]
    with pytest.raises(FeatureFileError, match="other settings"):  # never mix features of other encoders
        FeatureCache(cache, {**extraction_meta(reward), "protocol": "train"})
    features.save(tmp_path / "features.pt")
    features = PairFeatures.load(tmp_path / "features.pt")
    inputs_a, inputs_b = features.inputs(HeadSpec())
    for index, pair in enumerate(pairs[:3]):
        for inputs, file in ((inputs_a, pair.audio_a), (inputs_b, pair.audio_b)):
            wave, sample_rate = sf.read(file, dtype="float32", always_2d=True)
            expected = reward.features(torch.from_numpy(wave.T).unsqueeze(0), sample_rate, [pair.prompt])[0]
            torch.testing.assert_close(inputs[index], expected, rtol=0, atol=1e-6)
    # a head trained on these features loads into the reward and scores the files as its inputs say
    result = train_head_on_features(features, HeadTrainingConfig(max_epochs=2, val_fraction=0.0))
    path = save_head_checkpoint(result.head, result.spec, tmp_path / "full.pt")
    retrained = TuneJuryReward.from_pretrained(str(path))
    score = retrained.score_files([pairs[0].audio_a], [pairs[0].prompt])[0]
    assert score == pytest.approx(float(result.head(inputs_a[:1])[0]), abs=1e-5)


def test_align_train_head(tmp_path, capsys):
    separable_features().save(tmp_path / "features.pt")
    out = tmp_path / "head.pt"
    argv = ["train-head", "--features", str(tmp_path / "features.pt"), "--out", str(out), "--exclude", "mert,text",
            "--epochs", "8", "lr=1e-3", "patience=3"]
    assert align(argv) == 0
    assert "train accuracy" in capsys.readouterr().out
    head, spec = load_head(out)
    assert spec == CLAP_ONLY
    training = json.loads((tmp_path / "head.pt.training.json").read_text())
    assert training["config"]["lr"] == 1e-3 and training["config"]["max_epochs"] == 8 and training["epochs"] <= 8
    assert align(argv[:-1] + ["patiens=3"]) == 2
    assert "unknown config key(s) ['patiens']" in capsys.readouterr().err
    assert align(argv[:5]) == 2  # all blocks asked, only CLAP audio extracted
    assert "exclude them" in capsys.readouterr().err
