"""Best-of-N reranking with a reward (the TuneJury release's best-of-N protocol).

Generate ``n`` candidates per prompt with seeds ``base_seed + c``, score them with the reward in
batches, keep each prompt's best. The "mean best reward vs N" curve gives, for N = 1, 2, 4, ... n, the expected
best of N candidates drawn from the n (the unbiased order-statistics estimator: every N-subset
averaged, far less noisy than one nested prefix), with a bootstrap 95 % interval over prompts.

Work is done in units of ``candidates_per_batch`` candidates of one prompt (generated and scored
together), so a resumed or sharded run repeats exactly the computations of an uninterrupted one.

``scorers`` (name -> ``fn(audio, sample_rate, prompts) -> (B,)``) score every candidate beside the reward
without taking part in the selection: the debug world's truth (:func:`tunejury_align.debug.truth`), held-out
judges. Their curves read the value of the *reward's* choice among N candidates, so a reward
that is being gamed shows as a reward curve that rises while theirs does not.

The library default adds no prompt prefix; the published protocol's prefix ("high quality
instrumental music, ") is set in the shipped YAML recipes (``recipes/<generator>/best_of_n.yaml``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..debug.worlds import WORLD_HELP, world_settings
from ..generators import as_generator
from ..generators.base import Generator
from ..reward.judges import judge_names, judges_mean
from .compute import Compute, pass_unit, passes_per_clip
from .selection import check_select, select_winners, selection_values

REWARD_PROMPT_MODES = ("prompt", "generation", "empty")


@dataclass
class BestOfNConfig:
    """Best-of-N settings (defaults: the published protocol's N and seeds, no prompt prefix)."""

    n: int = field(default=32, metadata={"help": "candidates per prompt"})
    base_seed: int = field(default=42, metadata={"help": "candidate c uses seed base_seed + c"})
    prompt_prefix: str = field(default="", metadata={
        "help": "prepended to each prompt for generation (the published recipes use 'high quality instrumental "
                "music, ')"})
    reward_prompt: str = field(default="prompt", metadata={
        "help": "text the reward sees: 'prompt' (the user's prompt), 'generation' (with the prefix) or "
                "'empty' (the empty-prompt protocol of the published score distributions)"})
    candidates_per_batch: int = field(default=8, metadata={
        "help": "candidates of one prompt generated and scored together (the unit of resume)"})
    save_all: bool = field(default=False, metadata={"help": "write every candidate's audio, not only winners"})
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples for the curve's 95 % interval"})
    bootstrap_seed: int = field(default=0, metadata={"help": "seed of the bootstrap resampling"})
    generation: dict = field(default_factory=dict, metadata={
        "help": "generator options (e.g. duration, top_k, temperature, guidance_scale, steps)"})
    world: dict = field(default_factory=dict, metadata={"help": WORLD_HELP})
    prune: bool = field(default=False, metadata={
        "help": "MusicGen: early pruning (speculative rejection): score prefixes, stop the weakest streams"})
    prune_at: list = field(default_factory=lambda: [0.25], metadata={
        "help": "prune points, as fractions of the clip (increasing, in (0, 1))"})
    prune_keep: float = field(default=0.25, metadata={
        "help": "fraction of the running streams kept at each prune point (at least one)"})
    prune_margin: float | None = field(default=None, metadata={
        "help": "also keep every stream whose prefix score is within this margin of the best (null: off)"})
    select: str = field(default="reward", metadata={
        "help": "which candidate to keep: 'reward', 'judges-mean' (the held-out judges' mean) or 'lcb' (mean - "
                "lcb_k x std over the reward and the judges); the last two need --judges"})
    lcb_k: float = field(default=1.0, metadata={"help": "the std multiplier of select=lcb"})

    def __post_init__(self):
        self.world = world_settings(self.world)
        if self.n < 1 or self.candidates_per_batch < 1:
            raise ValueError("n and candidates_per_batch must be >= 1")
        points = list(self.prune_at)
        if not points or any(not 0 < f < 1 for f in points) or points != sorted(set(points)):
            raise ValueError(f"prune_at must be increasing fractions in (0, 1), got {self.prune_at}")
        if not 0 < self.prune_keep <= 1 or (self.prune_margin is not None and self.prune_margin < 0):
            raise ValueError("prune_keep must be in (0, 1] and prune_margin >= 0 or null")
        if self.reward_prompt not in REWARD_PROMPT_MODES:
            raise ValueError(f"reward_prompt must be one of {REWARD_PROMPT_MODES}, got {self.reward_prompt!r}")
        if self.bootstrap < 0:
            raise ValueError("bootstrap must be >= 0")
        check_select(self.select, self.lcb_k)
        if self.prune and self.select != "reward":
            raise ValueError("prune=True keeps streams by the reward's prefix scores: use select=reward with prune")


@dataclass
class Unit:
    """``candidates_per_batch`` consecutive candidates of one prompt."""

    prompt_index: int
    candidates: list[int]
    seeds: list[int]
    compute: Compute | None = None  # what generating and scoring it took (set when it has run)


@dataclass
class BestOfNResult:
    """Every candidate's score, each prompt's winner and its audio, and the mean-best-reward curve."""

    scores: np.ndarray  # (P, n); NaN where a prompt is not finished
    winners: list[int]  # best candidate index per prompt (-1: not finished)
    curve: list[dict]  # [{"n", "mean", "low", "high"}]
    winner_audio: list[torch.Tensor | None] = field(default_factory=list)  # (C, T) per prompt; None where
    # the winner was not generated in this call (a resumed run's earlier work: read it from the run folder)
    sample_rate: int | None = None
    extra_scores: dict[str, np.ndarray] = field(default_factory=dict)  # scorer name -> (P, n)
    extra_curves: dict[str, list[dict]] = field(default_factory=dict)  # scorer -> its value at the reward's pick
    compute: Compute = field(default_factory=Compute)  # the work done in this call (not a resumed run's earlier)

    @property
    def winner_scores(self) -> list[float]:
        return [float(row[w]) if w >= 0 else float("nan") for row, w in zip(self.scores, self.winners)]


def plan_units(num_prompts: int, config: BestOfNConfig, prompt_indices: Iterable[int] | None = None) -> list[Unit]:
    indices = range(num_prompts) if prompt_indices is None else prompt_indices
    units = []
    for p in indices:
        for start in range(0, config.n, config.candidates_per_batch):
            candidates = list(range(start, min(config.n, start + config.candidates_per_batch)))
            units.append(Unit(p, candidates, [config.base_seed + c for c in candidates]))
    return units


def reward_texts(prompt: str, config) -> str:
    """The text the reward sees for ``prompt`` under a config's ``prompt_prefix`` / ``reward_prompt`` (best-of-N's,
    DITTO's, expert iteration's)."""
    return {"prompt": prompt, "generation": config.prompt_prefix + prompt, "empty": ""}[config.reward_prompt]


def run_unit(generator: Generator, reward: Callable, prompt: str, unit: Unit, config: BestOfNConfig,
             scorers: dict[str, Callable] | None = None):
    """Generate and score one unit -> (audio (k, C, T), scores (k,), {scorer: (k,)}), its compute recorded in
    ``unit.compute``. Scorers see the user's prompt (without the generation prefix)."""
    unit.compute = Compute(pass_unit=pass_unit(generator), reward_calls=len(unit.seeds),
                           generator_passes=passes_per_clip(generator, config.generation) * len(unit.seeds))
    with unit.compute.timing("generator"):
        audio = generator.generate([config.prompt_prefix + prompt] * len(unit.seeds), unit.seeds, **config.generation)
    with torch.inference_mode(), unit.compute.timing("encoder"):  # inference mode: ~8 % quicker than no_grad
        scores = reward(audio, generator.sample_rate, [reward_texts(prompt, config)] * len(unit.seeds))
    with torch.inference_mode():
        extras = {name: fn(audio, generator.sample_rate, [prompt] * len(unit.seeds)).detach().float().cpu()
                  for name, fn in (scorers or {}).items()}
    return audio, scores.detach().float().cpu(), extras


def best_of_n(
    generator,
    reward: Callable,
    prompts: Sequence[str],
    n: int | None = None,
    *,
    config: BestOfNConfig | None = None,
    sample_rate: int | None = None,
    completed: dict[tuple[int, int], float] | None = None,
    on_unit: Callable[[Unit, torch.Tensor, torch.Tensor, dict], None] | None = None,
    prompt_indices: Iterable[int] | None = None,
    progress: Callable[[int], None] | None = None,
    scorers: dict[str, Callable] | None = None,
    completed_extras: dict[str, dict[tuple[int, int], float]] | None = None,
) -> BestOfNResult:
    """Best-of-N over ``prompts``; returns every candidate's score, the winners, their audio and the curve.

    ``generator``: an adapter (``generate(prompts, seeds, **options)``, ``sample_rate``), a library
    object of a registered family (e.g. a diffusers pipeline) or a plain callable
    ``generate(prompts, seeds) -> (B, C, T)`` with ``sample_rate=``. ``reward``: any
    ``reward(audio (B, C, T), sample_rate, prompts) -> (B,)``. ``completed`` maps (prompt index,
    candidate) to scores already computed (skipped; a unit is redone unless all its candidates are
    there); ``on_unit(unit, audio, scores, extras)`` is called after each unit (the CLI writes files there);
    ``prompt_indices`` restricts the work to a shard of the prompts. ``scorers``: extra scores per
    candidate (see the module docstring), ``completed_extras`` their values for the ``completed`` ones.
    """
    config = config or BestOfNConfig()
    if n is not None and n != config.n:
        config = BestOfNConfig(**{**config.__dict__, "n": n})
    generator = as_generator(generator, sample_rate)
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts")
    if config.prune:
        raise ValueError("prune=True is early-pruned best-of-N: call tunejury_align.recipes.best_of_n_prune."
                         "pruned_best_of_n (or `align best-of-n --prune`)")
    scores = np.full((len(prompts), config.n), np.nan)
    extras = {name: np.full((len(prompts), config.n), np.nan) for name in scorers or {}}
    completed, completed_extras, spent = completed or {}, completed_extras or {}, Compute()
    best_audio: dict[int, tuple[float, int, torch.Tensor]] = {}  # prompt -> (score, candidate, audio)
    for unit in plan_units(len(prompts), config, prompt_indices):
        known = [completed.get((unit.prompt_index, c)) for c in unit.candidates]
        if all(k is not None for k in known):
            scores[unit.prompt_index, unit.candidates] = known
            for name, values in extras.items():
                values[unit.prompt_index, unit.candidates] = [
                    completed_extras.get(name, {}).get((unit.prompt_index, c), np.nan) for c in unit.candidates]
        else:
            audio, unit_scores, unit_extras = run_unit(generator, reward, prompts[unit.prompt_index], unit, config,
                                                       scorers)
            spent.add(unit.compute)
            scores[unit.prompt_index, unit.candidates] = unit_scores.numpy()
            for name, values in unit_extras.items():
                extras[name][unit.prompt_index, unit.candidates] = values.numpy()
            keep_winner_audio(best_audio, unit, audio, unit_scores, scores, extras, config)
            if on_unit is not None:
                on_unit(unit, audio, unit_scores, unit_extras)
        if progress is not None:
            progress(len(unit.candidates))
    result = summarize(scores, config, extras)
    result.sample_rate, result.compute = int(generator.sample_rate), spent
    result.winner_audio = [best_audio[p][2] if p in best_audio and best_audio[p][1] == w else None
                           for p, w in enumerate(result.winners)]
    return result


def keep_winner_audio(best_audio: dict, unit: Unit, audio: torch.Tensor, unit_scores: torch.Tensor,
                      scores: np.ndarray, extras: dict[str, np.ndarray], config: BestOfNConfig) -> None:
    """Track each prompt's winner audio: by the reward, unit by unit; by judges (``select``), the prompt's clips
    are held until its last candidate is scored, then all but the winner are dropped."""
    p = unit.prompt_index
    if config.select == "reward":
        top = int(torch.argmax(unit_scores))
        held = best_audio.get(p)
        if held is None or float(unit_scores[top]) > held[0]:  # the earliest candidate wins ties
            best_audio[p] = (float(unit_scores[top]), unit.candidates[top], audio[top])
        return
    pending = best_audio.setdefault(p, (None, None, {}))[2]
    pending.update(zip(unit.candidates, audio))
    if not np.isnan(scores[p]).any():  # the prompt's last unit: choose now
        winner = select_winners(scores[p:p + 1], {k: v[p:p + 1] for k, v in extras.items()}, config.select,
                                config.lcb_k)[0]
        best_audio[p] = (None, winner, pending.get(winner))


def summarize(scores: np.ndarray, config: BestOfNConfig, extras: dict[str, np.ndarray] | None = None) -> BestOfNResult:
    """Winners (by ``config.select``) and curves: the expected reward (and each extra score, and the judges'
    mean when there are judges) of the candidate the selection picks among N."""
    extras = dict(extras or {})
    done = ~np.isnan(scores).any(axis=1)
    if config.select != "reward":
        for name in judge_names(extras):
            done &= ~np.isnan(extras[name]).any(axis=1)
    ranking = selection_values(scores, extras, config.select, config.lcb_k)
    winners = [int(np.argmax(row)) if ok else -1 for row, ok in zip(ranking, done)]
    curve = best_of_n_curve(ranking[done], bootstrap=config.bootstrap, seed=config.bootstrap_seed,
                            values=scores[done]) if done.any() else []
    curved = dict(extras)
    if (mean := judges_mean(extras)) is not None:
        curved["judges_mean"] = mean
    extra_curves = {}
    for name, values in curved.items():
        usable = done & ~np.isnan(values).any(axis=1)
        extra_curves[name] = best_of_n_curve(ranking[usable], bootstrap=config.bootstrap, seed=config.bootstrap_seed,
                                             values=values[usable]) if usable.any() else []
    return BestOfNResult(scores=scores, winners=winners, curve=curve, extra_scores=dict(extras or {}),
                         extra_curves=extra_curves)


def curve_points(n: int) -> list[int]:
    points = [1]
    while points[-1] * 2 <= n:
        points.append(points[-1] * 2)
    return points if points[-1] == n else points + [n]


def best_of_k_weights(n: int, k: int) -> np.ndarray:
    """``(n,)`` the probability that the candidate ranked ``i``-th lowest of ``n`` is the best of a
    uniformly drawn ``k``-subset: ``C(i-1, k-1) / C(n, k)``."""
    from math import comb

    return np.array([comb(i, k - 1) for i in range(n)], dtype=np.float64) / comb(n, k)


def best_of_n_curve(scores: np.ndarray, bootstrap: int = 1000, seed: int = 0, values: np.ndarray | None = None) -> list[dict]:
    """Mean over prompts of the expected best score of N candidates drawn from each prompt's n,
    N = 1, 2, 4, ..., n (every N-subset averaged; N = n is the plain maximum), with a percentile
    bootstrap 95 % interval over prompts. ``scores``: ``(P, n)``. With ``values`` ``(P, n)`` (e.g. the
    truth), the expected value of ``values`` at the candidate the scores pick instead."""
    scores = np.asarray(scores, dtype=np.float64)
    values = scores if values is None else np.asarray(values, dtype=np.float64)
    # ascending; among tied scores the earlier candidate ranks higher (as argmax picks it)
    order = scores.shape[1] - 1 - np.argsort(scores[:, ::-1], axis=1, kind="stable")
    ranked = np.take_along_axis(values, order, axis=1)  # (P, n), values in the scores' order
    rng = np.random.default_rng(seed)
    resamples = rng.integers(0, scores.shape[0], size=(bootstrap, scores.shape[0])) if bootstrap else None
    curve = []
    for n in curve_points(scores.shape[1]):
        best = ranked @ best_of_k_weights(scores.shape[1], n)  # (P,)
        point = {"n": n, "mean": float(best.mean())}
        if resamples is not None:
            means = best[resamples].mean(axis=1)
            point["low"], point["high"] = (float(x) for x in np.percentile(means, [2.5, 97.5]))
        curve.append(point)
    return curve
