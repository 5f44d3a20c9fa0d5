"""Evaluation metrics against hand-computed values, and `align eval`."""

import json
import math

import pytest
import soundfile as sf
import torch
from conftest import make_clip
from test_calibration import align

from tunejury_align.reward.calibration import Calibration, Pair, PairsError
from tunejury_align.reward.evaluation import MosItem, evaluate_mos, evaluate_pairs, read_mos
from tunejury_align.reward.metrics import expected_calibration_error, pairwise_accuracy


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_ece_hand_computed_two_bins():
    # sorted by |margin|: 0.2 (A, right), -0.5 (B, right) | -1.0 (B predicted, A won: wrong), 2.0 (right)
    ece, bins = expected_calibration_error([0.2, -1.0, 2.0, -0.5], [True, True, True, False], bins=2)
    low = (sigmoid(0.2) + sigmoid(0.5)) / 2
    high = (sigmoid(1.0) + sigmoid(2.0)) / 2
    assert ece == pytest.approx(0.5 * abs(low - 1.0) + 0.5 * abs(high - 0.5), abs=1e-15)
    assert [(b["count"], b["low"], b["high"], b["accuracy"]) for b in bins] == [(2, 0.2, 0.5, 1.0), (2, 1.0, 2.0, 0.5)]
    assert bins[0]["confidence"] == pytest.approx(low, abs=1e-15)


def test_ece_ten_equal_count_bins():
    # 20 pairs -> 10 bins of 2; each bin holds one right and one wrong prediction of equal |margin|
    margins, a_wins = [], []
    for k in range(1, 11):
        margins += [k / 4, -k / 4]
        a_wins += [True, True]  # margin > 0 right, margin < 0 wrong
    ece, bins = expected_calibration_error(margins, a_wins)
    assert len(bins) == 10 and all(b["count"] == 2 and b["accuracy"] == 0.5 for b in bins)
    assert ece == pytest.approx(sum(abs(sigmoid(k / 4) - 0.5) for k in range(1, 11)) / 10, abs=1e-15)
    # fewer pairs than bins: empty bins dropped; margin 0 predicts B (right when B won), confidence 1/2
    ece, bins = expected_calibration_error([0.0, 3.0, -1.0], [False, True, False])
    assert len(bins) == 3 and ece == pytest.approx((0.5 + (1 - sigmoid(1.0)) + (1 - sigmoid(3.0))) / 3)


def test_pairwise_accuracy_leaves_ties_out():
    assert pairwise_accuracy([1.0, -2.0, 0.0, 0.5], [True, True, False, False]) == (0.5, 4)
    pairs = [Pair("A", "x", "y", 1.0, 0.0), Pair("tie", "x", "y", 5.0, 0.0), Pair("B", "x", "y", 0.2, 0.0),
             Pair("B", "y", "y", 0.0, 0.0)]
    result = evaluate_pairs(pairs)
    assert (result["pairs"], result["ties"], result["used"]) == (4, 1, 3)
    assert result["accuracy"] == pytest.approx(2 / 3) and not result["calibrated"]
    # with a calibration: x's scores drop by 0.5, so the third pair's margin becomes -0.3 (right)
    calibrated = evaluate_pairs(pairs, Calibration(biases={"x": 0.5}))
    assert calibrated["accuracy"] == 1.0 and calibrated["calibrated"]


def test_spearman_with_ties_hand_computed():
    # score ranks [4, 1.5, 1.5, 5, 3], MOS ranks [4, 1, 2.5, 5, 2.5]; centred products sum to 8.75,
    # both sums of squares to 9.5
    items = [MosItem(mos=m, score=s) for s, m in zip([0.5, 0.1, 0.1, 0.9, 0.3], [3, 1, 2, 5, 2])]
    assert evaluate_mos(items) == {"items": 5, "spearman": pytest.approx(8.75 / 9.5, abs=1e-15)}


def test_read_mos_errors(tmp_path):
    path = tmp_path / "mos.csv"
    path.write_text("score,mos\n0.1,3\n0.2,\n")
    with pytest.raises(PairsError, match=r"mos.csv:3: needs a 'mos' value"):
        read_mos(path)
    path.write_text("audio,mos\n,3\n")
    with pytest.raises(PairsError, match="needs a 'score' or an 'audio'"):
        read_mos(path)


def test_align_eval_scores_and_mos(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"score_a": 1.0, "score_b": 0.0, "winner": "A", "system_a": "x", "system_b": "y"},
            {"score_a": 0.2, "score_b": 0.0, "winner": "model_b", "system_a": "x", "system_b": "y"},
            {"score_a": 0.0, "score_b": 0.0, "winner": "Tie", "system_a": "x", "system_b": "y"}]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval.json"
    assert align(["eval", "--pairs", str(pairs), "--json", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads(out.read_text())
    assert (result["accuracy"], result["used"], result["ties"], len(result["bins"])) == (0.5, 2, 1, 2)
    calibration = tmp_path / "cal.json"
    Calibration(biases={"x": 0.5, "y": 0.0}).save(calibration)
    assert align(["eval", "--pairs", str(pairs), "--calibration", str(calibration), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0
    assert align(["eval", "--pairs", str(pairs)]) == 0
    assert "pairwise accuracy 0.5000" in capsys.readouterr().out
    mos = tmp_path / "mos.csv"
    mos.write_text("score,mos\n1,1\n2,2\n3,2\n4,5\n")
    assert align(["eval", "--mos", str(mos), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spearman"] == pytest.approx(0.9486832980505138)
    assert align(["eval", "--mos", str(mos), "--calibration", str(calibration)]) == 2
    assert "not to --mos" in capsys.readouterr().err


@pytest.fixture()
def one_thread():
    """The tiny encoders run faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_align_eval_scores_audio_pairs_with_the_reward(hub_cache, reward, one_thread, tmp_path, capsys):
    for name, kind in (("a.wav", "tone"), ("b.wav", "chord")):
        sf.write(tmp_path / name, make_clip(1.0, 16_000, kind).T.numpy(), 16_000)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("audio_a,audio_b,prompt,winner\na.wav,b.wav,jazz,A\nb.wav,a.wav,,A\na.wav,gone.wav,,B\n")
    assert align(["eval", "--pairs", str(pairs), "--reward", "TuneJury/tunejury", "--json"]) == 1  # gone.wav
    captured = capsys.readouterr()
    assert "gone.wav" in captured.err and "1 of 3 pair(s) left out" in captured.err
    a_jazz, b_jazz = reward.score_files([tmp_path / "a.wav", tmp_path / "b.wav"], ["jazz", "jazz"])
    a_plain, b_plain = reward.score_files([tmp_path / "a.wav", tmp_path / "b.wav"])
    expected = ((a_jazz - b_jazz > 0) + (b_plain - a_plain > 0)) / 2
    assert json.loads(captured.out)["accuracy"] == expected
