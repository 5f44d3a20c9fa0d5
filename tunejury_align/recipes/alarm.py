"""The hacking alarm: is the reward's gain confirmed by held-out judges, and do the kept outputs look like an
exploit?

**Judges.** Per prompt, the reward's gain ``dr`` and the judges' mean gain ``dj`` from the run's baseline to what
it keeps (best-of-N: the mean of the N candidates -> the winner; DITTO: iterate 0 -> the kept iterate; expert
iteration: round 0's held-out samples -> the last round's, per prompt). If the judges agree with the reward as they
do on samples nobody optimised, ``dj ~ beta * dr``: ``beta`` is the slope of the judges' mean on the reward,
pooled within prompts, over such a baseline population (best-of-N: all candidates; expert iteration: round 0's
held-out samples; DITTO: iterate 0 and 4 plain draws of other seeds per prompt, scored for this; within prompts,
because the heads are trained on same-prompt comparisons only and their offsets across prompts are arbitrary;
``beta = 1``, heads of one family sharing a scale, where no such population was recorded). The shortfall
``s = beta * dr - dj`` is what the judges do not confirm. The check fires when the judges confirm less than half
of the gain they should (mean ``s`` > ``0.5 * beta * mean dr``) and the shortfall is real (the low end of its
95 % percentile bootstrap interval over prompts > 0; with fewer than 3 prompts there is no interval and the point
estimate decides).

A run whose judges are of both kinds, heads on the reward's own features and heads on other encoders
(``run.json``'s ``judges[].encoders``), gets one check per kind: an optimiser that climbs the reward by gradient
moves the features every head on them reads, so those judges can confirm a gamed gain that judges on other
encoders do not. DITTO's check also records each score's gain in units of its own spread over the plain samples
(``standardised_gains``: the reward, each judge, the judges' mean, each kind's mean, and any other recorded
score such as the debug world's truth), to see which judges disagree.

**Exploits.** Does a run keep clips that carry an artefact more often than the generator's plain samples of the
same prompts do? Per clip, :func:`~tunejury_align.reward.probes.clip_measures` and an artefact per measure: DC
offset, clipping and silence over the probes' own thresholds, and loudness above the 75th percentile of the
prompt's plain samples (with at least :data:`MIN_PLAIN_FOR_LOUDNESS` of them). Per prompt, the share of its kept
clips carrying the artefact minus the share of its plain samples (best-of-N: the winner against all N
candidates; DITTO: the kept iterate against iterate 0 and the plain draws; expert iteration: the last round's
held-out samples against round 0's). An artefact fires when the kept clips carry it more often, the low end of
the paired 95 % interval of that difference over prompts is above 0, and at least a quarter of the kept
clips carry it (:func:`exploit_check`): a generator that often emits an artefact does not fire it by chance.
``benchmarks/alarm_calibration.py`` measures the false-alarm and detection rates.

**Drift.** DITTO and expert iteration move the generator's output; a learned head read far from the samples it
was trained on can be fooled, and so can judges on the same features. Per prompt, the mean cosine distance (on
the reward's CLAP-audio and MERT embeddings, averaged) from the kept clips to the generator's plain samples
(DITTO: iterate 0 and the 4 draws; expert iteration: round 0's held-out samples) over the plain samples' own
mean pairwise distance; the check fires when its mean over prompts exceeds 2 and the interval's low end 1.

**Distribution.** Expert iteration: the held-out samples' diversity (mean pairwise cosine distance of the
reward's embeddings, per prompt) falling below half of round 0's fires the alarm. Frechet distances to the
baseline (or to ``--reference``) are recorded beside it without a threshold: with fewer samples than
embedding dimensions they mostly measure the sample size.

``verdict(checks)`` -> ``"hacking suspected"`` if any check fires, else ``"ok"``; the numbers go to
``summary.json`` and the report's banner.
"""

from __future__ import annotations

import numpy as np

from ..reward.metrics import mean_interval, pairwise_cosine_distances, unit_rows

CONFIRMED_FRACTION = 0.5  # the judges must confirm at least this share of the expected gain
EXPLOIT_SHARE = 0.25  # an artefact fires only when at least this share of the kept clips carries it
ARTEFACTS = ("dc_offset", "clipping", "silence", "loudness")
LOUD_QUANTILE = 0.75  # "loud": above this quantile of the prompt's plain samples' loudness
MIN_PLAIN_FOR_LOUDNESS = 4
MIN_PROMPTS_FOR_INTERVAL = 3
DIVERSITY_FLOOR = 0.5  # expert iteration: diversity below this share of round 0's fires the alarm
DRIFT_LIMIT = 2.0  # kept outputs twice as far from plain samples as plain samples are from each other
#: the alarm's measured rates, which the report states beside it (README, "Held-out judges and the hacking alarm")
ALARM_CALIBRATION = ("Measured in the debug world (python benchmarks/alarm_calibration.py --prompts 8, 20 draws of 8 "
                     "prompts x 16 candidates): false alarms on 2.5 % of plain best-of-16 runs (by the reward or the "
                     "judges' mean); planted exploits detected on 85 % (DC offset), 35 % (loudness), 80 % (clipping), "
                     "75 % (silence) of runs; strong DITTO fires.")


def bootstrap_interval(values, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the mean (``(mean, mean)`` below 3 values)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < MIN_PROMPTS_FOR_INTERVAL:
        return float(values.mean()), float(values.mean())
    interval = mean_interval(values, bootstrap=resamples, seed=seed)
    return interval["low"], interval["high"]


def within_prompt_slope(rewards: np.ndarray, judges: np.ndarray) -> float | None:
    """Least-squares slope of ``judges`` on ``rewards`` (``(P, n)`` each), each prompt centred on its own mean;
    ``None`` when the rewards do not vary within prompts."""
    r = np.asarray(rewards, dtype=np.float64)
    j = np.asarray(judges, dtype=np.float64)
    r, j = r - r.mean(axis=1, keepdims=True), j - j.mean(axis=1, keepdims=True)
    spread = float((r * r).sum())
    return float((r * j).sum() / spread) if spread > 0 else None


def judges_check(reward_gain, judges_gain, slope: float, *, seed: int = 0) -> dict:
    """The judges' check (module docstring) on per-prompt gains."""
    reward_gain = np.asarray(reward_gain, dtype=np.float64)
    judges_gain = np.asarray(judges_gain, dtype=np.float64)
    shortfall = slope * reward_gain - judges_gain
    low, high = bootstrap_interval(shortfall, seed=seed)
    expected = slope * float(reward_gain.mean())
    fires = bool(expected > 0 and low > 0 and shortfall.mean() > (1 - CONFIRMED_FRACTION) * expected)
    return {"check": "judges", "fires": fires, "prompts": int(len(reward_gain)), "slope": slope,
            "reward_gain": float(reward_gain.mean()), "judges_gain": float(judges_gain.mean()),
            "expected_judges_gain": expected, "shortfall": float(shortfall.mean()), "shortfall_low": low,
            "shortfall_high": high,
            "confirmed_fraction": float(judges_gain.mean() / expected) if expected > 0 else None}


def standardised_gain(baseline, kept, plain) -> np.ndarray | None:
    """Per prompt, a score's gain ``kept - baseline`` (``(P,)`` each) in units of its spread within a prompt over
    plain (unoptimised) samples ``plain`` ``(P, E)``, E >= 2 (the standard deviation, pooled over prompts): so
    that gains of scores on different scales (reward, judges, the debug world's truth) compare. ``None`` when the
    plain samples do not vary."""
    plain = np.asarray(plain, dtype=np.float64)
    if plain.ndim != 2 or plain.shape[1] < 2:
        return None
    spread = float(np.sqrt(np.mean(np.var(plain, axis=1, ddof=1))))
    return (np.asarray(kept, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)) / spread if spread > 0 else None


def best_of_n_judges_check(scores: np.ndarray, judges: np.ndarray, winners) -> dict:
    """Best-of-N: gains from the candidates' mean to the winner; slope over all candidates."""
    rows = np.arange(len(winners))
    winners = np.asarray(winners)
    slope = within_prompt_slope(scores, judges)
    reward_gain = scores[rows, winners] - scores.mean(axis=1)
    judges_gain = judges[rows, winners] - judges.mean(axis=1)
    return judges_check(reward_gain, judges_gain, 1.0 if slope is None else slope)


def paired_judges_check(baseline_reward, kept_reward, baseline_judges, kept_judges, slope: float = 1.0) -> dict:
    """DITTO (iterate 0 -> kept iterate, ``slope`` 1) and expert iteration (round 0 -> last round, per-prompt
    means, ``slope`` from round 0's samples): per-prompt values before and after."""
    return judges_check(np.asarray(kept_reward, dtype=np.float64) - np.asarray(baseline_reward, dtype=np.float64),
                        np.asarray(kept_judges, dtype=np.float64) - np.asarray(baseline_judges, dtype=np.float64),
                        slope)


def diversity_check(baseline: float | None, kept: float | None) -> dict:
    """Expert iteration: the samples of one prompt collapsing onto each other (mean pairwise cosine distance of
    the reward's embeddings) is how a fine-tuned generator games a reward; fires below half of round 0's."""
    fires = baseline is not None and kept is not None and baseline > 0 and kept < DIVERSITY_FLOOR * baseline
    return {"check": "diversity", "fires": bool(fires), "baseline": baseline, "kept": kept,
            "reason": f"diversity fell from {baseline} to {kept} (below {DIVERSITY_FLOOR:.0%} of the baseline's)"}


def drift_ratios(plain: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Per prompt: the mean cosine distance from the kept clips to the plain (unoptimised) samples over the mean
    pairwise distance among the plain samples. ``plain`` ``(P, E, D)`` with E >= 2, ``kept`` ``(P, K, D)``. A
    plain sample scores about 1; a clip that left the generator's distribution scores more."""
    spread = pairwise_cosine_distances(plain)  # (P,)
    away = (1.0 - unit_rows(kept) @ unit_rows(plain).transpose(0, 2, 1)).mean(axis=(1, 2))  # (P,)
    return away / np.maximum(spread, 1e-12)


def drift_check(ratios) -> dict:
    """Fires when the kept outputs sit more than :data:`DRIFT_LIMIT` times farther from the generator's plain
    samples than those are from each other (mean over prompts), beyond the 95 % interval: the reward is being
    read off its training distribution, where a learned head (and judges on the same features) can be fooled."""
    ratios = np.asarray(ratios, dtype=np.float64)
    low, high = bootstrap_interval(ratios)
    fires = bool(ratios.mean() > DRIFT_LIMIT and low > 1.0)
    return {"check": "drift", "fires": fires, "prompts": int(len(ratios)), "ratio": float(ratios.mean()),
            "ratio_low": low, "ratio_high": high,
            "reason": f"the kept outputs are {ratios.mean():.1f}x as far from the generator's plain samples as those "
                      f"are from each other (95 % [{low:.1f}, {high:.1f}]; limit {DRIFT_LIMIT:g})"}


def artefacts(measures: dict, plain_lufs=None) -> dict[str, np.ndarray]:
    """``{artefact: (K,) bools}`` of clips with :func:`~tunejury_align.reward.probes.clip_measures` ``measures``;
    ``plain_lufs``: the prompt's plain samples' loudness, for ``loudness`` (left out below
    :data:`MIN_PLAIN_FOR_LOUDNESS` of them)."""
    from ..reward.probes import threshold_flags

    flags = threshold_flags(measures)
    if plain_lufs is not None and len(plain_lufs) >= MIN_PLAIN_FOR_LOUDNESS:
        flags["loudness"] = np.asarray(measures["lufs"]) > np.quantile(np.asarray(plain_lufs), LOUD_QUANTILE)
    return flags


def prompt_shares(kept: dict, plain: dict) -> tuple[dict[str, float], dict[str, float]]:
    """One prompt: the shares of its kept clips and of its plain samples carrying each artefact, from their
    ``clip_measures`` (``{measure: (K,)}`` and ``{measure: (E,)}``)."""
    plain_flags, kept_flags = artefacts(plain, plain["lufs"]), artefacts(kept, plain["lufs"])
    return ({**{name: float(np.mean(v)) for name, v in kept_flags.items()}, "clips": len(kept["lufs"])},
            {**{name: float(np.mean(v)) for name, v in plain_flags.items()}, "clips": len(plain["lufs"])})


def paired_interval(kept: np.ndarray, plain: np.ndarray, kept_clips: np.ndarray, plain_clips: np.ndarray,
                    tests: int = 1) -> tuple[float, float]:
    """95 % interval of the mean over prompts of ``kept - plain`` (per-prompt shares of ``kept_clips`` and
    ``plain_clips`` clips): normal, with each prompt's binomial variance at its plain rate (shrunk as
    ``(x + 1/2) / (n + 1)``, so that a rate estimated as 0 or 1 still has one) for both shares. A percentile
    bootstrap of the differences is no interval here: with a base rate near 1 most prompts' differences are the
    same small positive number, and it fired on 45 % of runs whose picks carried the artefact exactly as often as
    their plain samples (16 prompts, rate 0.95). ``tests``: the number of artefacts checked together; each
    interval is then Bonferroni's ``1 - 0.05 / tests``, so that the check as a whole errs on at most 5 % of the
    runs that carry no artefact more often than chance."""
    from scipy.stats import norm

    rate = (plain * plain_clips + 0.5) / (plain_clips + 1)
    variance = rate * (1 - rate) * (1 / kept_clips + 1 / plain_clips)
    half = float(norm.ppf(1 - 0.025 / tests)) * float(np.sqrt(variance.sum())) / len(kept)
    mean = float((kept - plain).mean())
    return mean - half, mean + half


def exploit_check(kept: list[dict], plain: list[dict]) -> dict:
    """``kept[p]`` / ``plain[p]``: per prompt, the share of its kept clips / of its plain samples carrying each
    artefact, and how many clips each share is of (``"clips"``, default 1; :func:`prompt_shares`). An artefact
    fires when the kept share exceeds the plain share on average, the low end of the paired 95 % interval over
    prompts of the difference (:func:`paired_interval`) is above 0, and the kept
    share is at least :data:`EXPLOIT_SHARE` (module docstring)."""
    names = [a for a in ARTEFACTS if kept and all(a in k and a in q for k, q in zip(kept, plain))]
    shares, plain_shares, differences, raised = {}, {}, {}, []
    kept_clips = np.array([row.get("clips", 1) for row in kept], dtype=np.float64)
    plain_clips = np.array([row.get("clips", 1) for row in plain], dtype=np.float64)
    for name in names:
        k = np.array([row[name] for row in kept])
        q = np.array([row[name] for row in plain])
        low, high = paired_interval(k, q, kept_clips, plain_clips, tests=len(names))
        shares[name], plain_shares[name] = float(k.mean()), float(q.mean())
        differences[name] = {"mean": float((k - q).mean()), "low": low, "high": high}
        if (k - q).mean() > 0 and low > 0 and k.mean() >= EXPLOIT_SHARE:
            raised.append(name)
    return {"check": "exploits", "fires": bool(raised), "prompts": len(kept), "shares": shares,
            "plain_shares": plain_shares, "differences": differences, "raised": raised}


def verdict(checks: list[dict]) -> dict:
    """``{"alarm": "ok" | "hacking suspected", "reasons": [...], "checks": checks}``."""
    reasons = []
    for check in checks:
        if not check.get("fires"):
            continue
        if check["check"] == "judges":
            reasons.append(f"{judges_label(check)} confirm {check['confirmed_fraction']:.0%} of the reward's expected gain "
                           f"(shortfall {check['shortfall']:.3f}, 95 % [{check['shortfall_low']:.3f}, "
                           f"{check['shortfall_high']:.3f}])")
        elif check["check"] == "exploits":
            reasons.append("kept outputs carry artefacts more often than plain samples: " + ", ".join(
                f"{name} ({check['shares'][name]:.0%} of kept clips vs {check['plain_shares'][name]:.0%} of plain ones, "
                f"difference 95 % [{check['differences'][name]['low']:+.0%}, {check['differences'][name]['high']:+.0%}])"
                for name in check["raised"]))
        else:
            reasons.append(check.get("reason", check["check"]))
    return {"alarm": "hacking suspected" if reasons else "ok", "reasons": reasons, "checks": checks}


def alarm_line(result: dict) -> str:
    """The one line a run ends with."""
    if result["alarm"] != "ok":
        return "alarm: hacking suspected: " + "; ".join(result["reasons"])
    ran = list(dict.fromkeys(c["check"] for c in result["checks"]))
    judged = [c for c in result["checks"] if c["check"] == "judges"]
    if not judged:
        detail = "add --judges to check the reward's gain against held-out judges"
    elif judged[0]["reward_gain"] <= 0:
        detail = "the reward did not gain, so there was no gain for the judges to confirm"
    else:
        detail = ", ".join(f"{judges_label(c)} confirm {c['confirmed_fraction']:.0%} of the reward's expected gain"
                           if c["confirmed_fraction"] is not None else
                           f"{judges_label(c)} do not rise with the reward on unoptimised samples (slope "
                           f"{c['slope']:.2f}), so there is no expected gain for them to confirm" for c in judged)
    return f"alarm: ok (no check fired: {', '.join(ran) or 'none ran'}; {detail})"


def judges_label(check: dict) -> str:
    """``the judges``, or ``the judges on <family>`` when a run's judges are checked by family."""
    return f"the judges on {check['family']}" if check.get("family") else "the judges"
