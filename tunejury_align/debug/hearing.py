"""Does a debug generator hear the prompt? The world-quality criteria of issue 29, properties of the generators
alone (no truth, no reward), beside :mod:`.proxy`'s criteria on the heads.

A generator that ignores the prompt can show only seed selection working; one whose seeds barely differ can show
nothing. Over :data:`HEARING_PROMPTS` (8 prompts, half of them of words in no shipped list) x :data:`HEARING_SEEDS`
(8 seeds), on the mono mix of each clip:

* **no identical audio across prompts**: for one seed, no two prompts give the same clip (max abs difference over
  :data:`IDENTICAL_TOLERANCE`);
* **the prompt matters as much as the seed**: the mean Pearson correlation of same-seed clips across prompts
  (``cross_prompt``) is at most that of same-prompt clips across seeds (``cross_seed``) plus
  :data:`PROMPT_MARGIN`, and ``cross_seed`` is at most :data:`MAX_CROSS_SEED`;
* **clean plain clips**: at most :data:`MAX_FLAGGED` of the clips raise an exploit flag (DC offset, clipping,
  silence) on the probes' own thresholds (:mod:`tunejury_align.reward.probes`).

``python benchmarks/debug_hearing.py`` prints the table for every family; the default test run asserts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import torch

#: 4 prompts of the shipped prompt lists' words, 4 of words none of the debug tokenizers' lists holds
HEARING_PROMPTS = ("calm solo piano", "fast techno drums", "lofi hip hop beat", "epic orchestral soundtrack",
                   "celtic fiddle reel", "gentle harp lullaby at night", "minimal techno with deep sub bass",
                   "Bossa nova, nylon guitar & brushed snare (1962)")
HEARING_SEEDS = tuple(range(8))
IDENTICAL_TOLERANCE = 1e-6
PROMPT_MARGIN = 0.05
MAX_CROSS_SEED = 0.5
MAX_FLAGGED = 0.01


def mono(audio: torch.Tensor) -> np.ndarray:
    """``(B, C, T)`` -> ``(B, T)`` float64 mono mix."""
    return audio.detach().to("cpu", torch.float64).mean(dim=1).numpy()


def mean_correlation(waves: np.ndarray, pairs) -> float:
    """Mean Pearson correlation of ``waves[i]`` with ``waves[j]`` over ``pairs`` (a silent clip counts 0)."""
    centred = waves - waves.mean(axis=-1, keepdims=True)
    norms = np.linalg.norm(centred, axis=-1)
    values = [float(centred[i] @ centred[j] / (norms[i] * norms[j])) if norms[i] > 0 and norms[j] > 0 else 0.0
              for i, j in pairs]
    return float(np.mean(values))


def exploit_flags(audio: torch.Tensor, sample_rate: int) -> dict[str, np.ndarray]:
    """Per clip, the probes' own flags that need no reward: ``{"dc_offset", "clipping", "silence"}`` -> ``(B,)``
    bools."""
    from ..reward.probes import clipping_fraction, dc_offset, silence_fraction, threshold_flags

    return threshold_flags({"dc_offset": dc_offset(audio), "clipping_fraction": clipping_fraction(audio),
                            "silence_fraction": silence_fraction(audio, sample_rate)})


def hearing_table(audio: torch.Tensor, sample_rate: int, prompts: int, seeds: int) -> dict:
    """The criteria's measures of ``(prompts * seeds, C, T)`` clips ordered prompt-major (clip ``p * seeds + s``)."""
    waves = mono(audio).reshape(prompts, seeds, -1)
    flat = waves.reshape(prompts * seeds, -1)
    index = np.arange(prompts * seeds).reshape(prompts, seeds)
    cross_prompt = [(index[a, s], index[b, s]) for s in range(seeds) for a, b in combinations(range(prompts), 2)]
    cross_seed = [(index[p, a], index[p, b]) for p in range(prompts) for a, b in combinations(range(seeds), 2)]
    identical = sum(float(np.abs(flat[i] - flat[j]).max()) <= IDENTICAL_TOLERANCE for i, j in cross_prompt)
    flags = exploit_flags(audio, sample_rate)
    flagged = np.any(np.stack(list(flags.values())), axis=0)
    level = 20 * np.log10(np.sqrt((flat ** 2).mean(axis=-1)) + 1e-12)
    return {"cross_prompt": mean_correlation(flat, cross_prompt), "cross_seed": mean_correlation(flat, cross_seed),
            "identical_pairs": int(identical), "identical_share": identical / len(cross_prompt),
            "flagged_share": float(flagged.mean()), **{f"{k}_share": float(v.mean()) for k, v in flags.items()},
            "rms_dbfs_median": float(np.median(level)), "clips": int(prompts * seeds)}


def hearing_failures(table: dict) -> list[str]:
    """The criteria a :func:`hearing_table` misses, in words (empty: the family hears the prompt)."""
    failures = []
    if table["identical_pairs"]:
        failures.append(f"{table['identical_pairs']} same-seed pairs of prompts give identical audio")
    if table["cross_prompt"] > table["cross_seed"] + PROMPT_MARGIN:
        failures.append(f"same-seed clips across prompts correlate {table['cross_prompt']:.3f}, over same-prompt "
                        f"clips across seeds ({table['cross_seed']:.3f}) + {PROMPT_MARGIN}: the prompt matters less "
                        "than the seed")
    if table["cross_seed"] > MAX_CROSS_SEED:
        failures.append(f"same-prompt clips across seeds correlate {table['cross_seed']:.3f} (> {MAX_CROSS_SEED})")
    if table["flagged_share"] > MAX_FLAGGED:
        failures.append(f"{table['flagged_share']:.1%} of plain clips raise an exploit flag (> {MAX_FLAGGED:.0%})")
    return failures


def measure_hearing(generator, prompts: Sequence[str] = HEARING_PROMPTS, seeds: Sequence[int] = HEARING_SEEDS,
                    batch: int = 16, **options) -> dict:
    """:func:`hearing_table` of ``generator`` over ``prompts`` x ``seeds`` (generated ``batch`` clips at a time),
    with its ``failures``."""
    items = [(p, s) for p in prompts for s in seeds]
    parts = [generator.generate([p for p, _ in items[i:i + batch]], [s for _, s in items[i:i + batch]], **options)
             for i in range(0, len(items), batch)]
    table = hearing_table(torch.cat(parts), generator.sample_rate, len(prompts), len(seeds))
    return {**table, "failures": hearing_failures(table)}
