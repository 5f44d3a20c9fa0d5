"""Held-out judges (issue 15): loading, one encoder pass per clip whatever the number of judges, refusal of a
judge that needs an encoder the reward does not load, selection by judges, the alarm's checks, `align score
--judges`. The debug world's judges and the alarm on DITTO runs are in test_debug_world.py."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from conftest import forward_calls, make_clip, save_head

from tunejury_align import BestOfNConfig, best_of_n
from tunejury_align.cli import main as align
from tunejury_align.cli import score as cli_score
from tunejury_align.recipes.alarm import (
    alarm_line,
    best_of_n_judges_check,
    exploit_check,
    judges_check,
    standardised_gain,
    verdict,
    within_prompt_slope,
)
from tunejury_align.recipes.selection import select_winners, selection_values
from tunejury_align.reward import TuneJuryReward
from tunejury_align.reward.head import TuneJuryHead
from tunejury_align.reward.judges import DEBUG_JUDGES, JudgeError, judge_scorers, load_judges, parse_judges


@pytest.fixture(scope="module")
def judge_files(tmp_path_factory):
    """Three released-layout judge heads (the leave-one-dataset-out names), seeded."""
    folder = tmp_path_factory.mktemp("judges")
    paths = []
    for seed, name in enumerate(["tunejury_leave_MA", "tunejury_leave_MP", "tunejury_leave_SE"]):
        torch.manual_seed(100 + seed)
        head = TuneJuryHead(2048).eval()
        for module in head.net:
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_var.uniform_(0.5, 2.0)
        paths.append(save_head(head, folder / f"{name}.pt"))
    return paths


def clips(batch: int = 3, seconds: float = 1.0, sample_rate: int = 32_000) -> torch.Tensor:
    return torch.stack([make_clip(seconds, sample_rate, kind, channels=1, seed=i)
                        for i, kind in zip(range(batch), ["tone", "chord", "noise"] * batch)])


def test_specs_parse_and_folders_load_every_head(judge_files, reward):
    assert parse_judges(["a,b", " c ", ""]) == ["a", "b", "c"] and parse_judges(None) == []
    judges = load_judges(str(judge_files[0].parent), reward)
    assert [j.name for j in judges] == ["tunejury_leave_MA", "tunejury_leave_MP", "tunejury_leave_SE"]
    assert all(j.spec.blocks == ("clap_audio", "mert", "text") for j in judges)
    with pytest.raises(JudgeError, match="same name"):
        load_judges([str(judge_files[0]), str(judge_files[0])], reward)


def test_judges_reuse_the_rewards_features_one_encoder_pass_per_clip(judge_files, reward):
    judges = load_judges(",".join(map(str, judge_files)), reward)
    scorers = judge_scorers(reward, judges)
    audio, prompts = clips(), ["calm piano", "jazz trio", "techno"]
    with forward_calls(reward.clap.audio_branch, reward.mert) as calls, torch.no_grad():
        scores = reward(audio, 32_000, prompts)
        judged = {name: fn(audio, 32_000, prompts) for name, fn in scorers.items()}
    assert calls == [1, 1]  # one CLAP-audio and one MERT pass for the batch, for the reward and 3 judges
    # each judge's score is its head on the reward's own features
    with torch.no_grad():
        features = reward.features(audio, 32_000, prompts)
        for judge in judges:
            assert torch.allclose(judged["judge_" + judge.name], judge.head(features), atol=1e-6)
        assert torch.allclose(scores, reward.head(features), atol=1e-6)
    # other audio (or the same tensor changed in place) is encoded again, once for all the judges
    other = clips() * 0.5
    with forward_calls(reward.clap.audio_branch, reward.mert) as calls, torch.no_grad():
        fresh = {name: fn(other, 32_000, prompts) for name, fn in scorers.items()}
    assert calls == [1, 1]
    with torch.no_grad():
        expected = judges[0].head(reward.features(other, 32_000, prompts))
    assert torch.allclose(fresh["judge_" + judges[0].name], expected, atol=1e-6)
    audio.mul_(0.5)
    with forward_calls(reward.clap.audio_branch, reward.mert) as calls, torch.no_grad():
        scorers["judge_" + judges[0].name](audio, 32_000, prompts)
    assert calls == [1, 1]


def test_best_of_n_scores_judges_with_one_encoder_pass_per_unit(judge_files, reward):
    judges = load_judges([str(p) for p in judge_files], reward)

    def generate(prompts, seeds):
        return torch.stack([0.2 * torch.randn(1, 16_000, generator=torch.Generator().manual_seed(s)) for s in seeds])

    config = BestOfNConfig(n=6, candidates_per_batch=3, bootstrap=0)
    with forward_calls(reward.clap.audio_branch, reward.mert) as calls:
        result = best_of_n(generate, reward, ["lofi beat"], config=config, sample_rate=16_000,
                           scorers=judge_scorers(reward, judges))
    assert calls == [2, 2]  # 2 units of 3 candidates: 2 passes of each encoder, not 2 x (1 + 3)
    assert sorted(result.extra_scores) == sorted("judge_" + j.name for j in judges)
    assert "judges_mean" in result.extra_curves
    # selecting by the judges' mean keeps that candidate and its audio
    chosen = best_of_n(generate, reward, ["lofi beat"], config=BestOfNConfig(n=6, candidates_per_batch=3, bootstrap=0,
                                                                             select="judges-mean"),
                       sample_rate=16_000, scorers=judge_scorers(reward, judges))
    mean = np.mean([chosen.extra_scores["judge_" + j.name][0] for j in judges], axis=0)
    assert chosen.winners == [int(np.argmax(mean))]
    assert torch.equal(chosen.winner_audio[0], generate(None, [42 + chosen.winners[0]])[0])


def test_the_muq_head_is_refused_with_what_it_reads(reward, tmp_path):
    """TuneJury's encoder-swap head over MuQ-MuLan features: a plain state dict under ``score.``, Linear
    1024-512-256-128-64-1 with BatchNorm blocks (REFERENCE.md)."""
    widths, state = [1024, 512, 256, 128, 64, 1], {}
    for block, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        state[f"score.{4 * block}.weight"], state[f"score.{4 * block}.bias"] = torch.randn(fan_out, fan_in), torch.zeros(fan_out)
        if fan_out > 1:
            norm = torch.nn.BatchNorm1d(fan_out).state_dict()
            state.update({f"score.{4 * block + 1}.{k}": v for k, v in norm.items()})
    torch.save(state, tmp_path / "tunejury_muq_leave_MA.pt")
    with pytest.raises(JudgeError, match="MuQ encoder-swap head.*does not load MuQ-MuLan"):
        load_judges(str(tmp_path / "tunejury_muq_leave_MA.pt"), reward)


def test_a_judge_that_needs_an_encoder_the_reward_lacks_is_refused(judge_files, hub_cache):
    clap_only = TuneJuryReward.from_pretrained("TuneJury/tunejury/A1_clap_audio_only.pt")
    assert clap_only.mert is None
    with pytest.raises(JudgeError, match="reads the mert block.*does not load MERT"):
        load_judges(str(judge_files[0]), clap_only)
    with pytest.raises(JudgeError, match="debug judges read the debug reward"):
        load_judges("debug", clap_only)


def test_standardised_gain_is_the_gain_over_the_plain_samples_spread():
    plain = np.array([[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]])  # standard deviation 1 within each prompt
    assert np.allclose(standardised_gain([0.0, 10.0], [2.0, 9.0], plain), [2.0, -1.0])
    assert np.allclose(standardised_gain([0.0, 0.0], [1.0, 1.0], plain * 10), [0.1, 0.1])  # the score's own scale
    assert standardised_gain([0.0], [1.0], [[3.0, 3.0]]) is None and standardised_gain([0.0], [1.0], [[3.0]]) is None


def test_judges_are_checked_by_the_encoders_they_read(tmp_path):
    from tunejury_align.recipes.alarm_run import judge_families

    names = ["judge_a", "judge_b", "judge_c"]
    assert judge_families(tmp_path, names) == {"": names}  # no run.json: one check over all
    (tmp_path / "run.json").write_text(json.dumps({"judges": [
        {"name": "a", "encoders": "reward"}, {"name": "b", "encoders": "own (debug-seed101 / debug-seed101)"},
        {"name": "c"}]}))  # a run recorded before judges named their encoders read the reward's
    assert judge_families(tmp_path, names) == {"the reward's encoders": ["judge_a", "judge_c"],
                                               "their own encoders": ["judge_b"]}
    (tmp_path / "run.json").write_text(json.dumps({"judges": [{"name": n, "encoders": "reward"} for n in "abc"]}))
    assert judge_families(tmp_path, names) == {"": names}
    checks = [{"check": "judges", "fires": False, "confirmed_fraction": 0.9, "family": "the reward's encoders"},
              {"check": "judges", "fires": True, "confirmed_fraction": -0.5, "family": "their own encoders",
               "shortfall": 1.0, "shortfall_low": 0.5, "shortfall_high": 1.5}]
    assert verdict(checks)["reasons"] == ["the judges on their own encoders confirm -50% of the reward's expected "
                                          "gain (shortfall 1.000, 95 % [0.500, 1.500])"]
    checks[1]["fires"], checks[1]["confirmed_fraction"] = False, 0.6
    for check in checks:
        check["reward_gain"], check["slope"] = 1.0, 0.5
    assert ("the judges on the reward's encoders confirm 90% of the reward's expected gain, the judges on their own "
            "encoders confirm 60% of the reward's expected gain") in alarm_line(verdict(checks))
    checks[1]["confirmed_fraction"], checks[1]["slope"] = None, -0.25  # these judges fall as the reward rises
    assert "the judges on their own encoders do not rise with the reward on unoptimised samples (slope -0.25)" in (
        alarm_line(verdict(checks)))


def test_selection_rules():
    scores = np.array([[1.0, 0.0, 0.5]])
    extras = {"judge_a": np.array([[0.0, 1.0, 0.5]]), "judge_b": np.array([[0.0, 0.8, 0.6]]),
              "truth": np.array([[9.0, 9.0, 9.0]])}
    assert select_winners(scores, extras, "reward") == [0]
    assert select_winners(scores, extras, "judges-mean") == [1]
    lcb = selection_values(scores, extras, "lcb", lcb_k=1.0)[0]
    heads = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.8, 0.6]])
    assert np.allclose(lcb, heads.mean(0) - heads.std(0))
    assert select_winners(scores, extras, "lcb") == [2]  # the candidate all three heads agree on
    with pytest.raises(ValueError, match="needs held-out judges"):
        select_winners(scores, {"truth": extras["truth"]}, "lcb")
    with pytest.raises(ValueError, match="select must be one of"):
        BestOfNConfig(select="judges")


def test_alarm_checks():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(6, 40))
    judges = 0.5 * rewards + rng.normal(scale=0.5, size=(6, 40))
    slope = within_prompt_slope(rewards, judges)
    centred = rewards - rewards.mean(1, keepdims=True), judges - judges.mean(1, keepdims=True)
    assert slope == pytest.approx(np.polyfit(centred[0].ravel(), centred[1].ravel(), 1)[0])
    # best-of-N: the judges agree as much as on any candidate -> no alarm
    winners = rewards.argmax(axis=1)
    assert not best_of_n_judges_check(rewards, judges, winners)["fires"]
    # the winners' judge scores pushed down: the reward's pick is not confirmed
    gamed = judges.copy()
    gamed[np.arange(6), winners] -= 2.0
    check = best_of_n_judges_check(rewards, gamed, winners)
    assert check["fires"] and check["confirmed_fraction"] < 0.5
    # paired (DITTO): judges follow -> ok; judges flat while the reward climbs -> fires
    assert not judges_check([1.0, 1.2, 0.8, 1.1], [0.9, 1.0, 0.7, 1.2], 1.0)["fires"]
    result = verdict([judges_check([3.0, 2.5, 3.2, 2.8], [0.1, -0.2, 0.0, 0.1], 1.0)])
    assert result["alarm"] == "hacking suspected" and "judges confirm" in result["reasons"][0]
    clean, flagged = {"dc_offset": 0.0}, {"dc_offset": 1.0}
    assert verdict([exploit_check([flagged] * 4, [clean] * 4)])["alarm"] == "hacking suspected"
    assert verdict([exploit_check([flagged] * 4, [flagged] * 4)])["alarm"] == "ok"
    # the run's last line says which checks ran and what the judges saw
    assert alarm_line(result).startswith("alarm: hacking suspected: the judges confirm")
    fell = verdict([judges_check([-1.0, -0.5, -0.2], [0.0, 0.0, 0.0], 1.0), exploit_check([], [])])
    assert alarm_line(fell) == ("alarm: ok (no check fired: judges, exploits; the reward did not gain, so there was "
                                "no gain for the judges to confirm)")


def test_score_prints_one_column_per_judge(judge_files, reward, tmp_path, monkeypatch, capsys):
    import soundfile

    for i in range(2):
        soundfile.write(tmp_path / f"clip{i}.wav", clips(2)[i, 0].numpy(), 32_000)
    monkeypatch.setattr(cli_score, "load_reward", lambda args, truth=None: reward)
    with forward_calls(reward.clap.audio_branch, reward.mert) as calls:
        assert align(["score", str(tmp_path / "clip0.wav"), str(tmp_path / "clip1.wav"), "--prompt", "jazz",
                      "--judges", f"{judge_files[0]},{judge_files[1]}"]) == 0
    assert calls == [2, 2]  # one pass of each encoder per file, with two judges
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("file"))
    assert "tunejury_leave_MA" in header and "tunejury_leave_MP" in header
    assert align(["score", str(tmp_path / "clip0.wav"), "--json", "--judges", str(judge_files[0])]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    judge = load_judges(str(judge_files[0]), reward)[0]
    audio = torch.from_numpy(soundfile.read(tmp_path / "clip0.wav", dtype="float32")[0])
    with torch.no_grad():
        expected = float(judge.head(reward.features(audio.view(1, 1, -1), 32_000, [""]))[0])
    assert record["judge_tunejury_leave_MA"] == pytest.approx(expected, abs=1e-5)
    assert align(["score", str(tmp_path / "clip0.wav"), "--judges", str(tmp_path / "missing.pt")]) == 2


def test_cli_best_of_n_with_debug_judges_selects_records_and_ends_with_the_alarm(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["best-of-n", "--n", "4", "--generator", "debug", "--reward", "debug", "--prompt", "lofi hip hop",
            "calm solo piano", "candidates_per_batch=2", "generation.duration=1.0", "--judges", "debug"]
    assert align([*args, "--select", "lcb", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^alarm: (ok|hacking suspected)", printed, re.M), printed
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    names = sorted(k for k in rows[0] if k.startswith("judge_"))
    assert names == sorted("judge_" + name for name in DEBUG_JUDGES) and len(names) == 6
    for p in range(2):  # the lcb pick over reward + judges, its audio written as the winner
        mine = [r for r in rows if r["prompt_index"] == p]
        heads = np.array([[r["score"], *(r[n] for n in names)] for r in mine])
        pick = int(np.argmax(heads.mean(axis=1) - heads.std(axis=1)))
        assert [r["winner"] for r in mine] == [c == pick for c in range(4)]
        assert (out / f"winners/p{p:04d}.wav").read_bytes() == (out / f"candidates/p{p:04d}_c{pick:02d}.wav").read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["select"] == "lcb" and {c["check"] for c in summary["alarm"]["checks"]} == {"judges", "exploits"}
    assert [c["family"] for c in summary["alarm"]["checks"] if c["check"] == "judges"] == [
        "the reward's encoders", "their own encoders"]
    recorded = json.loads((out / "run.json").read_text())["judges"]
    assert [j["name"] for j in recorded] == list(DEBUG_JUDGES)
    assert [j["encoders"] == "reward" for j in recorded] == [True] * 3 + [False] * 3
    assert "alarm" in (out / "report.html").read_text()
    # the judges are part of the run's settings: another set is refused in the same folder
    assert align([*args[:-1], "debug:debug-leave-musicgen", "--select", "lcb", "--out", str(out)]) == 2
    assert "judges" in capsys.readouterr().err
    # selection by judges without judges is refused before any generation
    assert align([*args[:-2], "--select", "judges-mean", "--out", str(tmp_path / "other")]) == 2
    assert "--judges" in capsys.readouterr().err


def test_pruned_best_of_n_and_smc_end_with_the_judges_check_of_their_last_pick(tmp_path, capsys):
    """Runs that keep no unoptimised clip: the alarm checks the last selection (the pick among the survivors /
    final particles against their mean) per kind of judge, and the run ends with the alarm line."""
    prompts = ["--prompt", "lofi hip hop beat", "jazz trio", "--reward", "debug", "--judges", "debug"]
    runs = {"pruned": ["best-of-n", "--prune", "--generator", "debug", "--n", "8", *prompts, "generation.duration=0.6",
                       "candidates_per_batch=8", "prune_at=[0.5]", "prune_keep=0.25"],
            "smc": ["smc", "--generator", "debug-audioldm2", "--particles", "3", *prompts, "temperature=100",
                    "ess_threshold=1.0", "generation.steps=4", "generation.duration=0.5"]}
    for name, args in runs.items():
        out = tmp_path / name
        assert align([*args, "--out", str(out)]) == 0
        assert re.search(r"^alarm: (ok|hacking suspected)", capsys.readouterr().out, re.M), name
        checks = json.loads((out / "summary.json").read_text())["alarm"]["checks"]
        assert [(c["check"], c["family"]) for c in checks] == [("judges", "the reward's encoders"),
                                                                ("judges", "their own encoders")]
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        if name == "pruned":  # per prompt: the survivors' scores and the winner's index among them
            per_prompt = [[r for r in rows if r["prompt_index"] == p and r["score"] is not None] for p in range(2)]
            scores = [[r["score"] for r in group] for group in per_prompt]
            judged = [[np.mean([r["judge_" + j] for j in checks[1]["judges"]]) for r in group] for group in per_prompt]
            picks = [[r["winner"] for r in group].index(True) for group in per_prompt]
        else:
            scores = [r["rewards"] for r in rows]
            judged = [np.mean([r["judge_" + j] for j in checks[1]["judges"]], axis=0) for r in rows]
            picks = [r["chosen"] for r in rows]
        assert checks[1]["reward_gain"] == pytest.approx(np.mean([s[k] - np.mean(s) for s, k in zip(scores, picks)]))
        assert checks[1]["judges_gain"] == pytest.approx(np.mean([j[k] - np.mean(j) for j, k in zip(judged, picks)]))
