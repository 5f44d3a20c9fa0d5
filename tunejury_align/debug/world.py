"""Samples of the debug world: the debug generators' clips for a set of prompts and seeds, with each encoder
set's features and the truth of each clip (what the debug reward and its judges are trained on, and what
their accuracy is measured on).

Each clip is generated once and handed to every consumer that needs it (the reward's encoders, the judges'
own encoders, the truth): generation costs about as much as one encoder pass, so a world whose heads read
four encoder sets would otherwise generate its clips four times.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

#: the generators whose samples the debug reward learns from
WORLD_GENERATORS = ("debug-musicgen", "debug-stable-audio", "debug-audioldm2")
#: prompts the debug reward is trained on (arena-style requests; words recur across prompts)
TRAIN_PROMPTS = (
    "lofi hip hop beat with warm piano chords", "epic orchestral soundtrack with brass and drums",
    "calm acoustic guitar melody", "upbeat electronic dance track", "jazz trio with double bass and brushed drums",
    "ambient synth pad, slow and spacious", "fast techno drums", "calm solo piano", "funk bass groove",
    "heavy rock guitar riff", "soft strings and piano ballad", "dark ambient drone", "bright pop synth melody",
    "slow blues guitar", "lofi beat with vinyl crackle", "orchestral strings crescendo",
    "lofi hip hop beat", "epic orchestral soundtrack", "jazz trio", "ambient synth pad",
)
#: prompts it never sees, for measuring how it generalises (made of words it has and has not seen)
HELDOUT_PROMPTS = (
    "warm jazz piano", "epic techno anthem", "slow ambient guitar", "bright orchestral fanfare",
    "lofi funk drums", "dark rock ballad", "calm synth arpeggio", "upbeat brass band",
)

#: ``features(audio (B, C, T), sample_rate, prompts) -> (B, D)``: one encoder set's head inputs
Features = Callable[[torch.Tensor, int, list[str]], torch.Tensor]


@dataclass
class WorldSamples:
    """``N`` clips: reward features ``(N, D)``, truth ``(N,)``, and for each clip its prompt index (into
    ``prompts``), generator name and seed."""

    features: torch.Tensor
    truths: torch.Tensor
    prompt_index: torch.Tensor
    generators: list[str]
    seeds: list[int]
    prompts: list[str]

    def __len__(self) -> int:
        return len(self.truths)

    def as_dict(self) -> dict:
        return {"features": self.features, "truths": self.truths, "prompt_index": self.prompt_index,
                "generators": list(self.generators), "seeds": list(self.seeds), "prompts": list(self.prompts)}

    @classmethod
    def from_dict(cls, data: dict) -> WorldSamples:
        return cls(data["features"], data["truths"], data["prompt_index"], list(data["generators"]),
                   [int(s) for s in data["seeds"]], list(data["prompts"]))

    @classmethod
    def concatenate(cls, parts: Sequence[WorldSamples]) -> WorldSamples:
        """One sample set from several over the same prompts (e.g. one per generator)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        return cls(torch.cat([p.features for p in parts]), torch.cat([p.truths for p in parts]),
                   torch.cat([p.prompt_index for p in parts]), [g for p in parts for g in p.generators],
                   [s for p in parts for s in p.seeds], list(parts[0].prompts))


def prompt_seeds(index: int, seeds_per_prompt: int, first_seed: int) -> list[int]:
    """The seeds of prompt ``index``: ``first_seed + 1000 index + s``."""
    return [first_seed + 1000 * index + s for s in range(seeds_per_prompt)]


#: clips per ``generate`` call when the world is built (measured: debug MusicGen's and AudioLDM 2's steps are
#: overhead-bound and gain from batching across prompts; debug Stable Audio's memory-bound decoder from small batches)
GENERATE_BATCH = {"debug-musicgen": 96, "debug-stable-audio": 2, "debug-audioldm2": 24}


def generate_clips(generator_name: str, prompts: Sequence[str], seeds_per_prompt: int, first_seed: int,
                   progress: Callable[[int], None] | None = None, indices: Sequence[int] | None = None,
                   ) -> Iterator[tuple[int, list[int], torch.Tensor, int]]:
    """``(prompt position, seeds, audio (S, C, T), sample rate)`` for each prompt, from the debug generator
    ``generator_name``; prompt ``i`` uses the seeds :func:`prompt_seeds` of ``indices[i]`` (default ``i``), whatever
    the batching (a candidate is a function of its prompt and seed). ``progress(1)`` after each prompt."""
    from ..generators import load_generator

    generator = load_generator(generator_name)
    indices = list(range(len(prompts))) if indices is None else list(indices)
    batch = max(GENERATE_BATCH.get(generator_name, seeds_per_prompt), 1)
    per_call = max(1, batch // max(seeds_per_prompt, 1))
    for start in range(0, len(prompts), per_call):
        chunk = range(start, min(start + per_call, len(prompts)))
        seeds = [prompt_seeds(indices[i], seeds_per_prompt, first_seed) for i in chunk]
        audio = generator.generate([prompts[i] for i in chunk for _ in range(seeds_per_prompt)],
                                   [s for row in seeds for s in row], max_batch_size=batch)
        for offset, i in enumerate(chunk):
            yield i, seeds[offset], audio[offset * seeds_per_prompt:(offset + 1) * seeds_per_prompt], generator.sample_rate
            if progress is not None:
                progress(1)


@dataclass
class ClipTable:
    """Clips generated once and scored by several encoder sets and truths: ``features[name] (N, D)``,
    ``truths[name] (N,)``, and each clip's prompt index, generator and seed."""

    features: dict[str, torch.Tensor]
    truths: dict[str, torch.Tensor]
    prompt_index: torch.Tensor
    generators: list[str]
    seeds: list[int]
    prompts: list[str]

    def samples(self, features: str, truth: str) -> WorldSamples:
        """One encoder set's features with one truth's values."""
        return WorldSamples(self.features[features], self.truths[truth], self.prompt_index, list(self.generators),
                            list(self.seeds), list(self.prompts))


def clip_table(feature_sets: dict[str, Features], truths: dict[str, Callable], prompts: Sequence[str],
               seeds_per_prompt: int, first_seed: int, generators: Sequence[str] = WORLD_GENERATORS,
               progress: Callable[[str, int, int], None] | None = None) -> ClipTable:
    """Generate ``seeds_per_prompt`` clips per prompt with each debug generator, once, and give every clip to
    each of ``feature_sets`` (name -> features function) and ``truths`` (name -> truth). Deterministic: the same
    arguments give the same table. ``progress(phase, 1, total)`` after each prompt."""
    features = {name: [] for name in feature_sets}
    values = {name: [] for name in truths}
    prompt_index, names, all_seeds = [], [], []
    for generator_name in generators:
        phase = f"debug world: {generator_name} clips"
        tick = (lambda advance, phase=phase: progress(phase, advance, len(prompts))) if progress else None
        for index, seeds, audio, rate in generate_clips(generator_name, prompts, seeds_per_prompt, first_seed, tick):
            texts = [prompts[index]] * len(seeds)
            with torch.no_grad():
                for name, fn in feature_sets.items():
                    features[name].append(fn(audio, rate, texts).float().cpu())
                for name, fn in truths.items():
                    values[name].append(fn(audio, rate, texts).float().cpu())
            prompt_index += [index] * len(seeds)
            names += [generator_name] * len(seeds)
            all_seeds += seeds
    return ClipTable({k: torch.cat(v) for k, v in features.items()}, {k: torch.cat(v) for k, v in values.items()},
                     torch.tensor(prompt_index), names, all_seeds, list(prompts))


def world_samples(features: Features, prompts: Sequence[str], seeds_per_prompt: int, first_seed: int,
                  generators: Sequence[str] = WORLD_GENERATORS, truth: Callable | None = None,
                  progress: Callable[[str, int, int], None] | None = None) -> WorldSamples:
    """:func:`clip_table` for one encoder set (``features``) and one truth (default: the shipped one)."""
    if truth is None:
        from .truth import truth
    table = clip_table({"features": features}, {"truth": truth}, prompts, seeds_per_prompt, first_seed, generators,
                       progress)
    return table.samples("features", "truth")


def same_prompt_pairs(samples: WorldSamples, same_generator: bool = False) -> torch.Tensor:
    """``(M, 2)`` every pair of clips of the same prompt: across and within generators (as an arena pairs
    two systems' answers to one request), or with ``same_generator`` only pairs of one generator's clips
    (as choosing among a model's own samples does)."""
    pairs = []
    for index in torch.unique(samples.prompt_index).tolist():
        members = torch.nonzero(samples.prompt_index == index).flatten()
        found = torch.combinations(members, 2)
        if same_generator:
            found = found[[samples.generators[a] == samples.generators[b] for a, b in found.tolist()]]
        pairs.append(found)
    return torch.cat(pairs) if pairs else torch.zeros(0, 2, dtype=torch.long)


def pairwise_accuracy_vs_truth(scores: torch.Tensor, samples: WorldSamples, pairs: torch.Tensor | None = None) -> float:
    """Share of same-prompt pairs (ties in truth left out) that ``scores (N,)`` orders as the truth does."""
    pairs = same_prompt_pairs(samples) if pairs is None else pairs
    a, b = pairs[:, 0], pairs[:, 1]
    decided = samples.truths[a] != samples.truths[b]
    agree = (scores[a] > scores[b]) == (samples.truths[a] > samples.truths[b])
    return float(agree[decided].float().mean())
