"""What a run spent, recorded by every recipe: generator forward passes (denoiser evaluations for the
diffusion families, decoder tokens for MusicGen), reward calls (clips scored, intermediate ones included),
seconds in the reward (its encoders and head) and seconds in the generator (sampling and decoding); for
expert iteration also the fine-tuning: optimizer steps, training examples (steps x global batch) and seconds.

Forward passes are counted per item: one guided denoiser call on one particle is one NFE (the guided and
unguided halves of classifier-free guidance count as one), one MusicGen decoder step of one stream is one
token. The counts are exact and reproducible; the seconds depend on the machine and its load.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass


@dataclass
class Compute:
    """Work done, summable across units, prompts and processes."""

    generator_passes: int = 0  # NFE (diffusion), decoder tokens (MusicGen) or generate calls (other callables)
    pass_unit: str = "nfe"
    reward_calls: int = 0  # clips the reward scored
    encoder_seconds: float = 0.0  # wall time inside reward calls (CLAP + MERT encoders and the head)
    generator_seconds: float = 0.0  # wall time inside the generator (sampling, decoding)
    train_steps: int = 0  # optimizer steps (expert iteration's fine-tuning)
    train_examples: int = 0  # training examples seen: steps x global batch (forward + backward each)
    train_seconds: float = 0.0  # wall time of the fine-tuning (a resumed round: every attempt's steps)

    def add(self, other: Compute | dict | None) -> Compute:
        if other is None:
            return self
        other = other if isinstance(other, Compute) else Compute(**other)
        if other.generator_passes and self.generator_passes and other.pass_unit != self.pass_unit:
            raise ValueError(f"cannot add {other.pass_unit} to {self.pass_unit}")
        self.pass_unit = other.pass_unit if other.generator_passes else self.pass_unit
        self.generator_passes += other.generator_passes
        self.reward_calls += other.reward_calls
        self.encoder_seconds += other.encoder_seconds
        self.generator_seconds += other.generator_seconds
        self.train_steps += other.train_steps
        self.train_examples += other.train_examples
        self.train_seconds += other.train_seconds
        return self

    def as_dict(self) -> dict:
        return asdict(self)

    def counts(self) -> dict:
        """The reproducible part (no seconds): for files that reruns and resumes must reproduce byte for byte."""
        return {"generator_passes": self.generator_passes, "pass_unit": self.pass_unit,
                "reward_calls": self.reward_calls}

    @contextmanager
    def timing(self, kind: str):
        """Add the block's wall time to ``generator_seconds`` (``kind="generator"``) or ``encoder_seconds``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            if kind == "generator":
                self.generator_seconds += elapsed
            else:
                self.encoder_seconds += elapsed


def total(records) -> Compute:
    """The sum of ``Compute`` dicts (``None`` entries skipped)."""
    result = Compute()
    for record in records:
        result.add(record)
    return result


def pass_unit(generator) -> str:
    """``"tokens"`` (MusicGen), ``"nfe"`` (an adapter whose options have ``steps``) or ``"calls"``."""
    if getattr(generator, "family", None) == "musicgen":
        return "tokens"
    fields = getattr(getattr(generator, "options_class", None), "__dataclass_fields__", {})
    return "nfe" if "steps" in fields else "calls"


def passes_per_clip(generator, generation: dict, duration: float | None = None) -> int:
    """Forward passes of one candidate: sampler steps (diffusion), decoder steps (MusicGen: frames plus the
    delay pattern's ``num_codebooks - 1``) for ``duration`` seconds (the generation's own when ``None``), 1 for
    a plain callable."""
    unit = pass_unit(generator)
    if unit == "calls":
        return 1
    options = generator.options(**generation)
    if unit == "nfe":
        return int(options.steps)
    seconds = options.duration if duration is None else duration
    return max(1, int(round(seconds * generator.frame_rate))) + generator.num_codebooks - 1


def logged_compute(folder, recursive: bool = False) -> Compute:
    """The sum of the ``compute`` fields of every process's progress log in a run folder (with ``recursive``, in
    its sub-folders too: expert iteration's phases). A unit a kill interrupted is not in it; it is redone, and
    counted, on resume."""
    from pathlib import Path

    from ..rundir import read_jsonl

    logs = Path(folder).glob(("**/" if recursive else "") + ".progress/rank*.jsonl")
    return total(record.get("compute") for log in sorted(logs) for record in read_jsonl(log))


def record_run_compute(folder, compute: Compute) -> None:
    """Add the run's compute to its ``run.json`` (the run metadata; not a setting, so a resume may change it)."""
    import json
    from pathlib import Path

    from ..rundir import atomic_write_json

    path = Path(folder) / "run.json"
    atomic_write_json(path, {**json.loads(path.read_text()), "compute": compute.as_dict()})
