"""Samples of the debug world: the debug generators' clips for a set of prompts and seeds, with the
reward's features and the truth of each clip (what the debug reward and its judges are trained on,
and what its accuracy is measured on)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .truth import truth

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


def world_samples(features: Callable[[torch.Tensor, int, list[str]], torch.Tensor], prompts: Sequence[str],
                  seeds_per_prompt: int, first_seed: int, generators: Sequence[str] = WORLD_GENERATORS,
                  progress: Callable[[str], None] | None = None) -> WorldSamples:
    """Generate ``seeds_per_prompt`` clips per prompt with each debug generator (prompt ``i`` uses seeds
    ``first_seed + 1000 i + s``), and compute ``features(audio, sample_rate, prompts)`` and the truth of
    each clip. Deterministic: the same arguments give the same samples."""
    from ..generators import load_generator

    rows: dict[str, list] = {"features": [], "truths": [], "prompt_index": [], "generators": [], "seeds": []}
    for name in generators:
        generator = load_generator(name)
        for index, prompt in enumerate(prompts):
            seeds = [first_seed + 1000 * index + s for s in range(seeds_per_prompt)]
            audio = generator.generate([prompt] * len(seeds), seeds)
            with torch.no_grad():
                rows["features"].append(features(audio, generator.sample_rate, [prompt] * len(seeds)).float().cpu())
                rows["truths"].append(truth(audio, generator.sample_rate, prompt).float().cpu())
            rows["prompt_index"] += [index] * len(seeds)
            rows["generators"] += [name] * len(seeds)
            rows["seeds"] += seeds
        if progress is not None:
            progress(name)
    return WorldSamples(torch.cat(rows["features"]), torch.cat(rows["truths"]), torch.tensor(rows["prompt_index"]),
                        rows["generators"], rows["seeds"], list(prompts))


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
