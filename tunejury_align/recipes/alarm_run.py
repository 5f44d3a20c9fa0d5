"""The hacking alarm of a finished run folder (best-of-N, DITTO, expert iteration): the judges' check from the
recorded scores, the exploit probes on each prompt's kept clip against its baseline clip (both read back from the
folder, so a resumed or sharded run gets the same alarm), written into ``summary.json``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..reward.head import FEATURE_BLOCKS
from ..reward.judges import JUDGE_PREFIX, judge_names
from ..rundir import atomic_write_json
from .alarm import (
    best_of_n_judges_check,
    diversity_check,
    drift_check,
    drift_ratios,
    exploit_check,
    paired_judges_check,
    prompt_shares,
    standardised_gain,
    verdict,
    within_prompt_slope,
)


def clip_probes(audio, sample_rate: int) -> dict[str, list[float]]:
    """``(B, C, T)`` clips -> ``{measure: [B floats]}``: :func:`~tunejury_align.reward.probes.clip_measures`, as the
    recipes log them beside each candidate's scores (the ``probes`` field of a unit), for the exploit check."""
    from ..reward.probes import clip_measures

    return {name: [float(v) for v in values] for name, values in clip_measures(audio, sample_rate).items()}


def file_probes(files: list[Path]) -> dict[str, np.ndarray] | None:
    """:func:`clip_probes` of the audio files (``None`` if any is missing)."""
    from ..reward.audio import read_audio

    if not files or not all(Path(f).is_file() for f in files):
        return None
    rows = [clip_probes(wave.unsqueeze(0), rate) for wave, rate in map(read_audio, files)]
    return {name: np.array([row[name][0] for row in rows]) for name in rows[0]}


def logged_probes(folder: Path, prompts: int, per_prompt: int) -> dict[str, np.ndarray] | None:
    """``{measure: (P, n)}`` from a run folder's logged ``probes`` (``None`` when any is missing: a run written
    before they were logged)."""
    from ..rundir import load_unit_extras, score_matrix

    probes = {k: score_matrix(v, prompts, per_prompt) for k, v in load_unit_extras(folder, "probes").items()}
    return probes if probes and not any(np.isnan(v).any() for v in probes.values()) else None


def exploits(kept: list[dict | None], plain: list[dict | None]) -> dict:
    """The exploit check (:func:`~.alarm.exploit_check`) over the prompts whose kept clips and plain samples both
    have measures (``{measure: (K,)}`` / ``{measure: (E,)}``)."""
    shares = [prompt_shares(k, q) for k, q in zip(kept, plain) if k is not None and q is not None]
    check = exploit_check([k for k, _ in shares], [q for _, q in shares])
    return check if shares else {**check, "note": "no clip measures to compare"}


def judge_families(out: Path, names: list[str]) -> dict[str, list[str]]:
    """The recorded judges (``judge_<name>``) by the encoders they read, from ``run.json``'s ``judges``: ``{"the
    reward's encoders": [...], "their own encoders": [...]}`` when the run has both kinds (each kind gets its own
    judges' check: heads on the reward's features climb with it when it is gamed by gradient, heads on other
    encoders are off the optimiser's path), else ``{"": names}`` (one check over all)."""
    try:
        recorded = json.loads((Path(out) / "run.json").read_text()).get("judges") or []
    except (OSError, ValueError):
        recorded = []
    own = {JUDGE_PREFIX + j["name"] for j in recorded if j.get("encoders", "reward") != "reward"}
    families = {"the reward's encoders": [n for n in names if n not in own],
                "their own encoders": [n for n in names if n in own]}
    return families if all(families.values()) else {"": list(names)}


def family_mean(values: dict, names: list[str], prefix: str = "") -> np.ndarray:
    """The mean over ``names`` of ``values[prefix + name]``."""
    return np.mean([np.asarray(values[prefix + n], dtype=np.float64) for n in names], axis=0)


def labelled(check: dict, family: str, names: list[str]) -> dict:
    return {**check, "family": family, "judges": [n[len(JUDGE_PREFIX):] for n in names]} if family else check


def embed_files(reward: Callable, files: list[Path]) -> dict[str, np.ndarray]:
    """``{block: (N, D)}``: the reward's own audio embeddings (CLAP audio, MERT) of the files that exist."""
    import torch

    from ..reward.audio import read_audio

    blocks = [b for b in getattr(getattr(reward, "spec", None), "blocks", ()) if b != "text"]
    rows: dict[str, list] = {b: [] for b in blocks}
    for file in files:
        if blocks and Path(file).is_file():
            wave, rate = read_audio(file)
            with torch.inference_mode():
                for block, value in reward.audio_blocks(wave.unsqueeze(0), rate, blocks).items():
                    rows[block].append(value[0].float().cpu().numpy())
    return {b: np.stack(v) for b, v in rows.items() if v}


def distribution(reward: Callable, kept: list[Path] | dict, baseline: list[Path] | dict, reference: Path | None) -> dict:
    """Frechet distance, MAD (if mauve-text is installed) and diversity of the kept clips against ``reference``
    (a folder of audio, e.g. real music) or the run's baseline clips; recorded, never an alarm on its own.
    ``kept`` / ``baseline``: files, or their :func:`embed_files` embeddings when the caller already has them."""
    from ..reward.probes import AUDIO_SUFFIXES, distribution_report

    run = kept if isinstance(kept, dict) else embed_files(reward, kept)
    if reference:
        against = embed_files(reward, sorted(f for f in Path(reference).rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES))
    else:
        against = baseline if isinstance(baseline, dict) else embed_files(reward, baseline)
    if not run or set(run) - set(against) or any(len(v) < 2 for v in (*run.values(), *against.values())):
        return {"reference": str(reference) if reference else "baseline", "note": "too few clips to compare"}
    return {"reference": str(reference) if reference else "baseline", **distribution_report(run, against)}


def eval_embeddings(folder: Path, prompts: int, per_prompt: int) -> np.ndarray | None:
    """``(P, E, D)``: expert iteration's stored evaluation embeddings (``None`` if any is missing)."""
    from ..rundir import load_tensor

    paths = [[folder / "embeddings" / f"p{p:04d}_c{c:03d}.pt" for c in range(per_prompt)] for p in range(prompts)]
    if not all(path.is_file() for row in paths for path in row):
        return None
    return np.stack([[load_tensor(path).float().numpy() for path in row] for row in paths])


def finish_alarm(out: Path, checks: list[dict], summary: dict | None = None) -> dict:
    """``summary.json`` = ``summary`` (or the file's content) plus ``alarm``; returns that content."""
    path = Path(out) / "summary.json"
    content = dict(summary) if summary is not None else (json.loads(path.read_text()) if path.is_file() else {})
    content["alarm"] = verdict(checks)
    atomic_write_json(path, content)
    return content


def best_of_n_alarm(out: Path, reward: Callable, prompts: list[str], scores: np.ndarray, extras: dict,
                    winners: list[int], summary: dict, paths: Callable[[int, int], str],
                    reference: Path | None = None) -> dict:
    """Best-of-N: the judges' gain from the candidates' mean to the winner; the winner's probes against
    candidate 0 (the N = 1 baseline). ``paths(p, c)`` is the file of candidate ``c`` (the winner's own file for
    ``c = -1``)."""
    checks = pick_checks(out, scores, extras, winners)
    probes = logged_probes(out, len(prompts), scores.shape[1])
    if probes is not None:  # the winner against all N candidates
        kept = [{m: v[p, [winners[p]]] for m, v in probes.items()} for p in range(len(prompts))]
        plain = [{m: v[p] for m, v in probes.items()} for p in range(len(prompts))]
    else:  # a run logged before the probes were: the winner against candidate 0, from the files
        kept = [file_probes([out / paths(p, -1)]) for p in range(len(prompts))]
        plain = [file_probes([out / paths(p, 0)]) for p in range(len(prompts))]
    checks.append(exploits(kept, plain))
    summary = {**summary, "distribution": distribution(reward, [out / paths(p, -1) for p in range(len(prompts))],
                                                       [out / paths(p, 0) for p in range(len(prompts))], reference)}
    return finish_alarm(out, checks, summary)


def selection_alarm(out: Path, rows: list[dict], chosen: list[int], summary: dict) -> dict:
    """Particle steering and pruned best-of-N, with judges: the judges' check of the last selection, from the mean
    of the final particles / surviving candidates (``rows[p]["scores"]`` and ``["extras"]``) to the kept one
    (``chosen[p]``), the slope over them, by kind of judge. These runs keep no unoptimised clip, so the resampling
    or pruning before that selection is not checked, and there is no drift or exploit check. Without judges (or
    with fewer than 2 finalists, or a different number per prompt) the summary is returned without an alarm."""
    names = sorted({n for r in rows for n in (r.get("extras") or {}) if n.startswith(JUDGE_PREFIX)})
    if not names or len({len(r["scores"]) for r in rows}) != 1 or len(rows[0]["scores"]) < 2:
        return summary
    scores = np.array([r["scores"] for r in rows], dtype=np.float64)
    extras = {n: np.array([r["extras"][n] for r in rows], dtype=np.float64) for n in names}
    return finish_alarm(out, pick_checks(out, scores, extras, chosen), summary)


def pick_checks(out: Path, scores: np.ndarray, extras: dict, picks: list[int]) -> list[dict]:
    """The judges' checks of a pick among candidates (``scores`` ``(P, n)``, ``extras`` the recorded scores of the
    same shape, ``picks[p]`` the kept candidate), one per kind of judge; none without judges."""
    names = judge_names(extras)
    return [labelled(best_of_n_judges_check(scores, family_mean(extras, members), picks), family, members)
            for family, members in (judge_families(out, names).items() if names else ())]


def ditto_alarm(out: Path, reward: Callable, prompts: list[str], rows: list[dict], summary: dict,
                paths: Callable[[str, int], str], reference: Path | None = None) -> dict:
    """DITTO: per prompt, iterate 0 -> the kept iterate (``rows``: the done markers, with ``baseline_judge_*`` /
    ``optimised_judge_*``)."""
    checks = []
    names = sorted({key[len("baseline_"):] for r in rows for key in r if key.startswith("baseline_judge_")})
    plain = bool(rows) and all("plain_draws" in r for r in rows)  # iterate 0 and the plain draws of each prompt
    families = judge_families(out, names) if names and rows else {}
    standardised = plain_sample_gains(rows, families) if families and plain else None
    for family, members in families.items():
        def mean(r, kind, members=members):
            return float(np.mean([r[f"{kind}_{n}"] for n in members]))
        slope = None
        if plain:
            rewards = np.array([[r["baseline_reward"], *r["plain_draws"]["reward"]] for r in rows])
            judged = np.array([[mean(r, "baseline"), *family_mean(r["plain_draws"], members)] for r in rows])
            slope = within_prompt_slope(rewards, judged)
        checks.append(labelled(paired_judges_check(
            [r["baseline_reward"] for r in rows], [r["optimised_reward"] for r in rows],
            [mean(r, "baseline") for r in rows], [mean(r, "optimised") for r in rows], 1.0 if slope is None else slope),
            family, members))
        if standardised:
            checks[-1]["standardised_gains"] = standardised
    pairs = [(out / paths("baseline", p), out / paths("optimised", p), prompt) for p, prompt in enumerate(prompts)]
    baseline = embed_files(reward, [base for base, _, _ in pairs])  # each clip encoded once, for drift and distribution
    optimised = embed_files(reward, [kept for _, kept, _ in pairs])
    drawn = [r.get("plain_draws", {}).get("embeddings") for r in rows]
    complete = optimised and all(len(v) == len(pairs) for v in (*baseline.values(), *optimised.values()))
    if rows and all(drawn) and complete:  # iterate 0 and the plain draws vs the kept iterate
        from ..rundir import load_tensor

        extra = [load_tensor(out / draws) for draws in drawn]
        checks.append(drift_check([np.mean([drift_ratios(np.concatenate([baseline[b][p:p + 1], extra[p][b].numpy()])[None],
                                                         optimised[b][p:p + 1][None])[0] for b in optimised])
                                   for p in range(len(pairs))]))
    plain = [file_probes([base]) for base, _, _ in pairs]
    for row, measures in zip(rows, plain):  # iterate 0 and the plain draws
        drawn = row.get("plain_draws", {}).get("probes")
        if measures is not None and drawn:
            for m in measures:
                measures[m] = np.concatenate([measures[m], np.asarray(drawn[m])])
    checks.append(exploits([file_probes([kept]) for _, kept, _ in pairs], plain))
    summary = {**summary, "distribution": distribution(reward, optimised, baseline, reference)}
    return finish_alarm(out, checks, summary)


def plain_sample_gains(rows: list[dict], families: dict[str, list[str]]) -> dict[str, float]:
    """DITTO: the mean over prompts of each recorded score's :func:`~.alarm.standardised_gain` (iterate 0 -> the
    kept iterate, over iterate 0 and the plain draws), of the judges' mean (``judges_mean``) and of each family's
    (``judges_mean (<family>)``, with more than one)."""
    names = [k for k in rows[0]["plain_draws"] if k not in ("seeds", "embeddings") and f"baseline_{k}" in rows[0]]
    groups = {name: [name] for name in names}
    groups["judges_mean"] = [n for family in families.values() for n in family]
    groups.update({f"judges_mean ({family})": members for family, members in families.items() if family})
    gains = {}
    for name, members in groups.items():
        plain = np.array([[family_mean(r, members, "baseline_"), *family_mean(r["plain_draws"], members)] for r in rows])
        gain = standardised_gain(plain[:, 0], [family_mean(r, members, "optimised_") for r in rows], plain)
        if gain is not None:
            gains[name] = float(gain.mean())
    return gains


def expert_iter_alarm(out: Path, reward: Callable, prompts: list[str], rounds: int, per_prompt: int,
                      reference: Path | None = None) -> dict:
    """Expert iteration: per held-out prompt, round 0's samples -> the last round's (means over the samples;
    the slope from round 0's samples); probes on sample 0 of the last round against round 0's."""
    from ..rundir import load_unit_extras, load_unit_scores, score_matrix

    def matrices(r: int) -> tuple[np.ndarray, dict]:
        folder = out / f"round_{r}" / "eval"
        scores = score_matrix(load_unit_scores(folder, len(prompts), per_prompt), len(prompts), per_prompt)
        return scores, {k: score_matrix(v, len(prompts), per_prompt) for k, v in load_unit_extras(folder).items()}

    checks, summary = [], {}
    (first, first_extras), (last, last_extras) = matrices(0), matrices(rounds)
    for family, names in judge_families(out, judge_names(first_extras)).items() if rounds > 0 and judge_names(
            first_extras) else ():
        before, after = family_mean(first_extras, names), family_mean(last_extras, names)
        slope = within_prompt_slope(first, before) if per_prompt > 1 else None
        checks.append(labelled(paired_judges_check(first.mean(axis=1), last.mean(axis=1), before.mean(axis=1),
                                                   after.mean(axis=1), 1.0 if slope is None else slope), family, names))
    if rounds > 0:
        metrics = [json.loads((out / f"round_{r}" / "metrics.json").read_text()) for r in (0, rounds)]
        checks.append(diversity_check(metrics[0].get("diversity"), metrics[1].get("diversity")))
        plain, kept = (eval_embeddings(out / f"round_{r}" / "eval", len(prompts), per_prompt) for r in (0, rounds))
        if plain is not None and kept is not None and per_prompt > 1:
            widths = [FEATURE_BLOCKS[b] for b in reward.spec.blocks if b != "text"] if hasattr(reward, "spec") else []
            bounds = np.cumsum([0, *widths]) if sum(widths) == plain.shape[-1] else np.array([0, plain.shape[-1]])
            checks.append(drift_check(np.mean([drift_ratios(plain[..., a:b], kept[..., a:b])
                                               for a, b in zip(bounds[:-1], bounds[1:])], axis=0)))
        name = "eval/audio/p{:04d}_c000.wav"
        pairs = [(out / "round_0" / name.format(p), out / f"round_{rounds}" / name.format(p), prompt)
                 for p, prompt in enumerate(prompts)]
        before, after = (logged_probes(out / f"round_{r}" / "eval", len(prompts), per_prompt) for r in (0, rounds))
        if before is not None and after is not None:  # the last round's held-out samples against round 0's
            checks.append(exploits([{m: v[p] for m, v in after.items()} for p in range(len(prompts))],
                                   [{m: v[p] for m, v in before.items()} for p in range(len(prompts))]))
        else:
            checks.append(exploits([file_probes([kept]) for _, kept, _ in pairs],
                                   [file_probes([base]) for base, _, _ in pairs]))
        summary["distribution"] = distribution(reward, [kept for _, kept, _ in pairs], [b for b, _, _ in pairs],
                                               reference)
    return finish_alarm(out, checks, summary)
