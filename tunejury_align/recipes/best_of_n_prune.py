"""Early-pruned best-of-N for MusicGen (speculative rejection, Sun et al., 2024, arXiv 2410.20290).

All N token streams of a prompt run together up to the first prune point; each stream's prefix is decoded
and scored by the reward, the lowest-scoring streams stop (keep the best ``prune_keep`` fraction, plus any
within ``prune_margin`` of the best prefix score), the rest go on to the next prune point, and the survivors
run to full length. Candidate c is always the stream of seed ``base_seed + c``, so a survivor's audio is
exactly the unpruned run's candidate c (tested byte for byte): the winner of a pruned run is the unpruned
winner whenever that one survives.

How the streams go on: transformers' MusicGen ``generate`` cannot resume a subset of a batch from its cache,
so each stage re-runs the surviving streams from their seeds to the next prune point (same seeds, same
tokens). The prefix a survivor already had is therefore computed again, and the compute record counts it:
with one prune point at a fraction f keeping k of N, the decoder runs ``N f + k`` full-clip equivalents
instead of ``N`` (e.g. N = 16, f = 0.25, k = 4: 8, half the compute).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..generators import as_generator
from .best_of_n import BestOfNConfig, reward_texts
from .compute import Compute, passes_per_clip


@dataclass
class PrunedPrompt:
    """One prompt's pruned best-of-N: final ``scores (N,)`` (NaN for pruned streams), each stage's prefix
    scores (``stages``: ``{"seconds", "candidates", "scores"}``), the winner and its audio, the compute spent
    and what the unpruned run would have spent."""

    prompt_index: int
    scores: np.ndarray
    stages: list[dict]
    winner: int
    winner_audio: torch.Tensor
    survivor_audio: dict[int, torch.Tensor]
    compute: Compute
    full_passes: int
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # scorer -> (N,), NaN for pruned streams


def keep_streams(candidates: list[int], scores: np.ndarray, keep: float, margin: float | None) -> list[int]:
    """The candidates that go on: the best ``ceil(keep * len)`` by prefix score (at least one; the earlier
    candidate wins a tie), plus every one within ``margin`` of the best; in candidate order."""
    order = sorted(range(len(candidates)), key=lambda i: (-scores[i], candidates[i]))
    kept = set(order[:max(1, math.ceil(keep * len(candidates)))])
    if margin is not None:
        kept |= {i for i in range(len(candidates)) if scores[i] >= scores[order[0]] - margin}
    return [candidates[i] for i in sorted(kept)]


def prune_prompt(generator, reward: Callable, prompt: str, prompt_index: int, config: BestOfNConfig,
                 scorers: dict[str, Callable] | None = None) -> PrunedPrompt:
    """Pruned best-of-N for one prompt (see the module docstring)."""
    options = generator.options(**config.generation)
    compute, stages = Compute(pass_unit="tokens"), []
    alive = list(range(config.n))
    text, reward_text = config.prompt_prefix + prompt, reward_texts(prompt, config)

    def run(candidates: list[int], seconds: float) -> torch.Tensor:
        with compute.timing("generator"):
            audio = generator.generate([text] * len(candidates), [config.base_seed + c for c in candidates],
                                       **{**config.generation, "duration": seconds})
        compute.generator_passes += passes_per_clip(generator, config.generation, seconds) * len(candidates)
        return audio

    def score(audio: torch.Tensor) -> np.ndarray:
        with compute.timing("encoder"), torch.inference_mode():
            values = reward(audio, generator.sample_rate, [reward_text] * len(audio))
        compute.reward_calls += len(audio)
        return values.detach().float().cpu().numpy()

    # 1. Each prune point: run the streams still alive to it, score their prefixes, stop the weakest
    for fraction in config.prune_at:
        seconds = fraction * options.duration
        prefix_scores = score(run(alive, seconds))
        stages.append({"seconds": seconds, "candidates": list(alive), "scores": [float(s) for s in prefix_scores]})
        alive = keep_streams(alive, prefix_scores, config.prune_keep, config.prune_margin)
    # 2. The survivors to full length: exactly the unpruned run's candidates
    audio = run(alive, options.duration)
    final = score(audio)
    scores = np.full(config.n, np.nan)
    scores[alive] = final
    extras = {}
    for name, fn in (scorers or {}).items():
        extras[name] = np.full(config.n, np.nan)
        with torch.inference_mode():
            extras[name][alive] = fn(audio, generator.sample_rate, [prompt] * len(alive)).detach().float().cpu().numpy()
    top = int(np.argmax(final))  # the earliest candidate wins ties
    return PrunedPrompt(prompt_index, scores, stages, alive[top], audio[top], dict(zip(alive, audio)), compute,
                        passes_per_clip(generator, config.generation) * config.n, extras)


def check_prunable(generator) -> None:
    """Pruning needs a generator whose shorter clip is the prefix of its longer one (an autoregressive family)."""
    if getattr(generator, "family", None) != "musicgen":
        raise ValueError(f"early pruning scores prefixes of token streams: it runs on MusicGen, not on "
                         f"{getattr(generator, 'family', None) or type(generator).__name__} (for the diffusion "
                         "families use particle steering, `align smc`)")


def pruned_best_of_n(generator, reward: Callable, prompts: Sequence[str], config: BestOfNConfig, *,
                     scorers: dict[str, Callable] | None = None, prompt_indices: Iterable[int] | None = None,
                     skip: Iterable[int] = (), on_prompt: Callable[[PrunedPrompt], None] | None = None
                     ) -> list[PrunedPrompt]:
    """Early-pruned best-of-N over ``prompts`` (MusicGen adapters); one :class:`PrunedPrompt` per prompt run.
    ``prompt_indices`` restricts the work to a shard, ``skip`` leaves out finished prompts, ``on_prompt`` is
    called after each prompt (the run folder writes there)."""
    generator = as_generator(generator)
    check_prunable(generator)
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts")
    generator.options(**config.generation)  # a bad generation option fails before any work
    done, results = set(skip), []
    for index in (range(len(prompts)) if prompt_indices is None else prompt_indices):
        if index in done:
            continue
        result = prune_prompt(generator, reward, prompts[index], index, config, scorers)
        if on_prompt is not None:
            on_prompt(result)
        results.append(result)
    return results
