"""Anchor calibration: bias recovery, the pin, labels, the K-sweep protocol, `align calibrate`."""

import argparse
import json
import math
import random
import warnings

import numpy as np
import pytest

from tunejury_align.reward.calibration import (
    Pair,
    PairsError,
    PinMissingWarning,
    agreement,
    fit_calibration,
    k_sweep,
    penalized_nll,
    read_pairs,
)

TRUE_BIASES = {"ref": 0.0, "gen1": 0.5, "gen2": -0.7, "gen3": 1.2}


def synthetic_pairs(count: int, seed: int = 0, biases=TRUE_BIASES) -> list[Pair]:
    """Reward = true quality + system bias; humans prefer by true quality (the calibration model)."""
    rng = np.random.default_rng(seed)
    names = list(biases)
    pairs = []
    for _ in range(count):
        a, b = rng.choice(len(names), 2, replace=False)
        quality_a, quality_b = rng.normal(size=2)
        winner = "A" if rng.random() < 1 / (1 + math.exp(-(quality_a - quality_b))) else "B"
        pairs.append(Pair(winner=winner, system_a=names[a], system_b=names[b],
                          score_a=quality_a + biases[names[a]], score_b=quality_b + biases[names[b]]))
    return pairs


def write_csv(path, pairs: list[Pair]) -> None:
    lines = ["system_a,system_b,score_a,score_b,winner"]
    lines += [f"{p.system_a},{p.system_b},{p.score_a!r},{p.score_b!r},{p.winner}" for p in pairs]
    path.write_text("\n".join(lines) + "\n")


def align(argv: list[str]) -> int:
    """``align ...`` in-process."""
    from tunejury_align import cli

    return cli.main(argv)


def test_fit_recovers_known_biases_with_the_pin():
    pairs = synthetic_pairs(20_000)
    fit = fit_calibration(pairs, pin="ref")
    assert fit.converged and fit.pairs == 20_000 and fit.ties == 0 and fit.pinned == "ref"
    assert fit.biases["ref"] == 0.0
    for system, bias in TRUE_BIASES.items():
        assert fit.biases[system] == pytest.approx(bias, abs=0.06)
    assert agreement(pairs, fit)[0] > agreement(pairs)[0] + 0.03  # calibration helps


def test_fit_matches_the_hand_solved_optimum():
    # One pair, A (system x) wins, score margin d, l2 = 1, no pin. By symmetry b_x = -t, b_y = t and the
    # objective log(1 + exp(-(d + 2t))) + 2 t^2 has derivative -2 sigmoid(-(d + 2t)) + 4t = 0.
    d = 0.3
    fit = fit_calibration([Pair("A", "x", "y", 0.4, 0.1)], l2=1.0)
    low, high = 0.0, 1.0
    for _ in range(200):  # bisection on the derivative
        t = (low + high) / 2
        low, high = (t, high) if -2 / (1 + math.exp(d + 2 * t)) + 4 * t < 0 else (low, t)
    assert fit.biases == pytest.approx({"x": -t, "y": t}, abs=1e-9)
    assert fit.objective == pytest.approx(math.log1p(math.exp(-(d + 2 * t))) + 2 * t * t, abs=1e-12)


def test_fit_is_a_stationary_point_of_the_stated_objective():
    pairs = synthetic_pairs(300, seed=3)
    fit = fit_calibration(pairs, l2=1.0, pin="ref")
    for system in ("gen1", "gen2", "gen3"):
        step = 1e-5
        up, down = dict(fit.biases), dict(fit.biases)
        up[system] += step
        down[system] -= step
        gradient = (penalized_nll(pairs, up) - penalized_nll(pairs, down)) / (2 * step)
        assert abs(gradient) < 1e-5
    assert penalized_nll(pairs, fit.biases) == pytest.approx(fit.objective)


def test_pin_honoured_and_a_missing_pin_is_reported():
    pairs = synthetic_pairs(500, seed=1)
    free = fit_calibration(pairs)
    pinned = fit_calibration(pairs, pin="gen2")
    assert pinned.biases["gen2"] == 0.0 and free.biases["gen2"] != 0.0
    # a pin only fixes the location: differences between systems barely move
    assert pinned.biases["gen1"] - pinned.biases["gen3"] == pytest.approx(free.biases["gen1"] - free.biases["gen3"],
                                                                           abs=0.05)
    with pytest.warns(PinMissingWarning, match="nowhere"):
        absent = fit_calibration(pairs, pin="nowhere")
    assert absent.pin_missing and absent.biases["nowhere"] == 0.0
    assert {k: v for k, v in absent.biases.items() if k != "nowhere"} == pytest.approx(free.biases)


def test_no_anchor_pairs_means_uncalibrated():
    pairs = synthetic_pairs(50, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = fit_calibration([])
    assert empty.biases == {} and agreement(pairs, empty) == agreement(pairs)
    ties_only = fit_calibration([Pair("tie", "a", "b", 1.0, 0.0)])
    assert ties_only.biases == {"a": 0.0, "b": 0.0} and ties_only.ties == 1 and ties_only.pairs == 0


def test_winner_labels_and_ties(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("system_a,system_b,score_a,score_b,winner\n"
                    "x,y,1,0,A\nx,y,1,0,b\nx,y,1,0,TIE\nx,y,1,0,model_a\nx,y,0,1,Model_B\n")
    pairs = read_pairs(path, require_systems=True)
    assert [p.winner for p in pairs] == ["A", "B", "tie", "A", "B"]
    fit = fit_calibration(pairs)
    assert fit.ties == 1 and fit.pairs == 4
    assert agreement(pairs) == (0.75, 4)  # the tie is left out; row 2 (B won with margin 1) disagrees
    path.write_text("system_a,system_b,score_a,score_b,winner\nx,y,1,0,A\nx,y,1,0,draw\n")
    with pytest.raises(PairsError, match=r"pairs.csv:3: unknown winner label 'draw'"):
        read_pairs(path)
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(json.dumps({"score_a": 1, "score_b": 0, "winner": "A"}) + "\n")
    with pytest.raises(PairsError, match=r"pairs.jsonl:1: needs 'system_a' and 'system_b'"):
        read_pairs(jsonl, require_systems=True)


def test_k_sweep_follows_the_protocol_and_is_deterministic():
    pairs = synthetic_pairs(120, seed=4) + [Pair("tie", "gen1", "gen2", 0.0, 0.0)] * 5
    result = k_sweep(pairs, [0, 5, 40], seeds=3, pool=60, test=50, pin="ref")
    assert result == k_sweep(pairs, [0, 5, 40], seeds=3, pool=60, test=50, pin="ref")
    # seed 1, K = 40 by hand
    rows = list(pairs)
    random.Random(1).shuffle(rows)
    fit = fit_calibration(rows[:40], pin="ref")
    assert result["k"][2]["per_seed"][1] == agreement(rows[60:110], fit)[0]
    k0 = result["k"][0]
    assert k0["per_seed"] == result["uncalibrated"]["per_seed"]
    for row in result["k"]:
        assert row["mean"] == pytest.approx(np.mean(row["per_seed"]))
        assert row["std"] == pytest.approx(np.std(row["per_seed"]))  # population std
    with pytest.warns(PinMissingWarning, match="absent from the anchors in 6 of 9 fit"):
        absent = k_sweep(pairs, [0, 5, 40], seeds=3, pool=60, test=50, pin="nowhere")
    assert [row["pin_missing"] for row in absent["k"]] == [0, 3, 3]
    with pytest.raises(ValueError, match="exceeds"):
        k_sweep(pairs, [0], pool=100, test=100)


def test_align_calibrate_writes_what_align_score_reads(tmp_path, capsys):
    from tunejury_align.cli.score import load_calibration_offset

    path = tmp_path / "pairs.csv"
    write_csv(path, synthetic_pairs(400, seed=5))
    out = tmp_path / "cal.json"
    assert align(["calibrate", "--pairs", str(path), "--out", str(out), "--pin", "ref"]) == 0
    printed = capsys.readouterr().out
    assert "(pinned)" in printed and "gen3" in printed
    saved = json.loads(out.read_text())
    assert saved["pinned"] == "ref" and saved["l2"] == 1.0 and saved["pairs"] == 400 and not saved["pin_missing"]
    offset = load_calibration_offset(argparse.Namespace(calibration=str(out), system="gen3"))
    assert offset == saved["biases"]["gen3"] == pytest.approx(1.2, abs=0.4)
    # the pin absent: said in the CLI, not dropped silently
    assert align(["calibrate", "--pairs", str(path), "--out", str(out), "--pin", "gen9", "--l2", "2"]) == 0
    assert "pinned system 'gen9' does not appear" in capsys.readouterr().err
    assert json.loads(out.read_text())["pin_missing"] is True


def test_align_calibrate_sweep_and_usage_errors(tmp_path, capsys):
    path = tmp_path / "pairs.csv"
    write_csv(path, synthetic_pairs(100, seed=6))
    argv = ["calibrate", "--pairs", str(path), "--sweep", "0,3,10", "--seeds", "2", "--pool", "40", "--test", "60"]
    assert align(argv + ["--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert align(argv + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out) == first
    assert [row["k"] for row in first["k"]] == [0, 3, 10]
    assert align(argv) == 0
    assert "uncalibrated:" in capsys.readouterr().out
    assert align(argv[:-4] + ["--pool", "80", "--test", "60"]) == 2
    assert "exceeds the 100 pairs" in capsys.readouterr().err
    assert align(["calibrate", "--pairs", str(path)]) == 2
    assert "--out is required" in capsys.readouterr().err
    path.write_text("system_a,system_b,score_a,score_b,winner\nx,y,1,0,maybe\n")
    assert align(["calibrate", "--pairs", str(path), "--out", str(tmp_path / "c.json")]) == 2
    assert "pairs.csv:2: unknown winner label 'maybe'" in capsys.readouterr().err
