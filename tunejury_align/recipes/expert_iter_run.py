"""An expert-iteration run on disk: resumable at the unit, step and round level, atomic writes,
sharded across processes under ``accelerate launch`` (generation by prompt, training by DDP).

Folder layout::

    run.json                      settings, prompts (train / held-out), model ids, versions
    metrics.jsonl                 one line per round (0 = the starting model), rebuilt after each round
    round_<r>/                    r = 0 .. rounds; round 0 only evaluates the starting model
        samples/.progress/rank<R>.jsonl   finished generation units (prompt, samples, seeds, scores)
        samples/targets/p<PPPP>_c<CCC>.pt training target of each sample (MusicGen codes, SA latents)
        samples/audio/p<PPPP>_c<CCC>.wav  sample 0 of each prompt; every sample with save_audio
        samples.jsonl, kept.jsonl, filter.json   every sample; the kept ones; the filter and threshold used
        train_state.pt            raw weights, AdamW, schedule, EMA, step, RNG and data-order state
                                  (every save_every steps, atomic; deleted when the round is done)
        train_log.jsonl           step, loss, learning rate
        checkpoint/               save_pretrained of the fine-tuned model (EMA weights), + tokenizer
        done.json                 written last: the round's training is finished
        eval/                     held-out samples: .progress/, embeddings/p<PPPP>_c<CCC>.pt (the reward's
                                  CLAP-audio | MERT features), audio/ (sample 0 always, all with save_audio)
        metrics.json              mean reward (and judges, truth) of fresh held-out samples, kept fraction,
                                  Frechet distances to round 0 (CLAP / MERT embeddings), diversity
    summary.json                  the hacking alarm (round 0 -> last round; :mod:`.alarm`)

Round r (1-based) generates with round r-1's checkpoint (round 0: the given generator), filters, trains and
checkpoints; then every round's checkpoint is evaluated on the held-out prompts with the same seeds. Rerunning
the same command continues where it stopped: finished units, steps (from the last ``train_state.pt``) and rounds
are not redone, and the weights equal an uninterrupted run's. A larger ``rounds`` continues a finished run.

:func:`expert_iteration` is the one-call library API (a run folder of your choice, or a temporary
one); :func:`run_expert_iteration` is what ``align expert-iter`` drives.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..generators import trainer_for
from ..reward.judges import judges_mean
from ..reward.metrics import frechet_distance, pairwise_cosine_diversity
from ..rundir import (
    RunMismatchError,
    append_jsonl,
    atomic_write_audio,
    atomic_write_json,
    holds_run_lock,
    load_tensor,
    load_unit_extras,
    load_unit_scores,
    log_unit,
    missing_units,
    prepare_run_dir,
    read_jsonl,
    require_complete,
    rewrite_jsonl,
    run_meta,
    save_tensor,
    score_matrix,
)
from .alarm_run import clip_probes, expert_iter_alarm
from .best_of_n import BestOfNConfig, best_of_n
from .compute import Compute, logged_compute, record_run_compute, total
from .expert_iter import ExpertIterConfig, select_kept, split_prompts
from .finetune import fine_tune, train_data

logger = logging.getLogger(__name__)

#: what each ``metrics.jsonl`` row must hold (:func:`~tunejury_align.rundir.read_jsonl`)
METRICS_FIELDS = {"round": "int", "eval_reward_mean": "number", "eval_reward_std": "number?",
                  **{key: "number?" for key in ("kept_fraction", "threshold", "frechet_clap_audio", "frechet_mert",
                                            "diversity", "train_loss_first", "train_loss_last")}}
TRAIN_LOG_FIELDS = {"step": "int", "loss": "number", "lr": "number"}
IO_SETTINGS = ("rounds", "save_every", "keep_train_state")  # may change on a resume (more rounds: continue)
__all__ = ["expert_iter_run_meta", "expert_iteration", "run_expert_iteration"]
Progress = Callable[[str, int, int], None]  # (phase, advance, total)


def item_name(prompt_index: int, sample: int) -> str:
    return f"p{prompt_index:04d}_c{sample:03d}"


class EmbeddingReward:
    """Wraps the reward for evaluation: returns the scores and keeps the audio embeddings of the
    last call (``self.last``, ``(B, D)``): the reward's own CLAP-audio / MERT feature blocks, or
    ``embed(audio, sample_rate)`` when given, or none."""

    def __init__(self, reward, embed: Callable | None = None):
        self.reward, self.embed, self.last = reward, embed, None
        self.blocks: list[tuple[str, int]] = []
        if embed is not None:
            self.blocks = [("embedding", -1)]
        elif all(hasattr(reward, name) for name in ("features", "head", "spec")):
            from ..reward.head import FEATURE_BLOCKS

            self.blocks = [(b, FEATURE_BLOCKS[b]) for b in reward.spec.blocks if b != "text"]

    def __call__(self, audio, sample_rate, prompts):
        if self.embed is not None:
            self.last = self.embed(audio, sample_rate).detach().float().cpu()
            return self.reward(audio, sample_rate, prompts)
        if not self.blocks:
            return self.reward(audio, sample_rate, prompts)
        features = self.reward.features(audio, sample_rate, prompts)
        self.last = features[:, : sum(width for _, width in self.blocks)].detach().float().cpu()
        return self.reward.head(features)

    def split(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        """``(..., D)`` -> ``{block: (..., width)}``."""
        if self.blocks == [("embedding", -1)]:
            return {"embedding": embeddings}
        out, start = {}, 0
        for name, width in self.blocks:
            out[name], start = embeddings[..., start:start + width], start + width
        return out


def generate_phase(folder: Path, generator, reward, prompts: list[str], config: BestOfNConfig, *, rank: int,
                   world_size: int, barrier, payload: Callable, payload_dir: str, save_audio: bool, progress,
                   phase: str, scorers: dict | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Generate and score ``config.n`` samples per prompt into ``folder`` (resumable per unit,
    sharded by prompt); ``payload(audio)`` gives one tensor per sample (or ``None``), saved under
    ``folder/payload_dir/``. Returns the ``(P, n)`` scores of every process's work and each scorer's
    ``(P, n)`` values."""
    def on_unit(unit, audio, scores, extras):
        for c, tensor, clip in zip(unit.candidates, payload(audio), audio):
            if tensor is not None:
                save_tensor(folder / payload_dir / f"{item_name(unit.prompt_index, c)}.pt", tensor)
            if save_audio or c == 0:  # sample 0 of each prompt always: the report compares rounds with it
                atomic_write_audio(folder / "audio" / f"{item_name(unit.prompt_index, c)}.wav", clip,
                                   generator.sample_rate)
        log_unit(folder, rank, unit.prompt_index, unit.candidates, unit.seeds, scores, extras,
                 compute=unit.compute.as_dict(), probes=clip_probes(audio, generator.sample_rate))

    shard = range(rank, len(prompts), world_size)
    total = len(shard) * config.n
    best_of_n(generator, reward, prompts, config=config, completed=load_unit_scores(folder, len(prompts), config.n),
              on_unit=on_unit, prompt_indices=shard,
              progress=(lambda k: progress(phase, k, total)) if progress else None,
              scorers=scorers, completed_extras=load_unit_extras(folder))
    barrier()
    scores = score_matrix(load_unit_scores(folder, len(prompts), config.n), len(prompts), config.n)
    require_complete(folder, missing_units(scores), scores.size, "sample")
    extras = {name: score_matrix(values, len(prompts), config.n) for name, values in load_unit_extras(folder).items()}
    return scores, extras


def sample_config(config: ExpertIterConfig, n: int, base_seed: int) -> BestOfNConfig:
    return BestOfNConfig(n=n, base_seed=base_seed, prompt_prefix=config.prompt_prefix,
                         reward_prompt=config.reward_prompt, candidates_per_batch=min(config.candidates_per_batch, n),
                         bootstrap=0, generation=dict(config.generation))


def filter_round(folder: Path, prompts: list[str], scores: np.ndarray, config: ExpertIterConfig, base_seed: int,
                 is_main: bool) -> tuple[list[tuple[int, int]], dict]:
    kept, info = select_kept(scores, config)
    if is_main:
        kept_set = set(kept)
        rows = [{"prompt_index": p, "prompt": prompts[p], "sample": c, "seed": base_seed + c,
                 "score": float(scores[p, c]), "kept": (p, c) in kept_set,
                 "target": f"samples/targets/{item_name(p, c)}.pt"}
                for p in range(len(prompts)) for c in range(scores.shape[1])]
        rewrite_jsonl(folder / "samples.jsonl", rows)
        rewrite_jsonl(folder / "kept.jsonl", [r for r in rows if r["kept"]])
        atomic_write_json(folder / "filter.json", {**info, "kept_reward_mean": float(np.mean(
            [scores[p, c] for p, c in kept])) if kept else None, "sample_reward_mean": float(scores.mean())})
    return kept, info


def train_round(folder: Path, trainer, kept, prompts, config: ExpertIterConfig, round_index: int, *, rank: int,
                world_size: int, accelerator, progress, callback) -> dict:
    """Fine-tune on the kept samples (resuming from ``train_state.pt``); leaves the new weights in the model."""
    state_path, log_path = folder / "train_state.pt", folder / "train_log.jsonl"
    digest = hashlib.sha256(json.dumps(kept).encode()).hexdigest()
    state = load_tensor(state_path) if state_path.is_file() else None
    if state is not None and state.get("kept_sha256") != digest:
        raise RunMismatchError(f"{state_path} was saved for another kept set; delete it to restart the round")
    start = int(state["step"]) if state is not None else 0
    if rank == 0:  # drop log records of steps after the saved state (they are redone)
        rewrite_jsonl(log_path, [r for r in read_jsonl(log_path, TRAIN_LOG_FIELDS) if r["step"] <= start])
    data = train_data([load_tensor(folder / "samples" / "targets" / f"{item_name(p, c)}.pt") for p, c in kept],
                      [config.prompt_prefix + prompts[p] for p, _ in kept])
    phase = f"round {round_index}: train"
    if progress and start:
        progress(phase, start, config.train_steps)

    began, spent = time.perf_counter(), float(state.get("train_seconds", 0.0)) if state is not None else 0.0

    def save_state(snapshot: dict) -> None:  # the seconds so far travel with the state: a resume adds to them
        save_tensor(state_path, {**snapshot, "kept_sha256": digest, "train_seconds": spent + time.perf_counter() - began})

    def on_step(step: int, loss: float, learning_rate: float) -> None:
        if rank == 0:
            append_jsonl(log_path, [{"step": step, "loss": loss, "lr": learning_rate}])
        if progress:
            progress(phase, 1, config.train_steps)
        if callback is not None:
            callback(round_index, step, loss)

    summary = fine_tune(trainer, data, config, round_index, state=state, save_state=save_state, on_step=on_step,
                        rank=rank, world_size=world_size, accelerator=accelerator)
    if summary["loss"] is None:  # resumed after the last step: the loss is in the log
        summary["loss"] = next((r["loss"] for r in reversed(read_jsonl(log_path, TRAIN_LOG_FIELDS))), None)
    compute = Compute(train_steps=summary["steps"], train_examples=summary["steps"] * config.train_batch_size,
                      train_seconds=spent + time.perf_counter() - began)
    return {**summary, "compute": compute.as_dict()}


def save_checkpoint(folder: Path, trainer) -> None:
    """``save_pretrained`` into ``checkpoint.tmp`` then rename: ``checkpoint/`` is always complete."""
    tmp, final = folder / "checkpoint.tmp", folder / "checkpoint"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def evaluate_round(folder: Path, generator, scorer: EmbeddingReward, prompts: list[str], config: ExpertIterConfig,
                   reference: Path, *, rank, world_size, barrier, progress, round_index: int,
                   scorers: dict | None = None) -> dict:
    """Fresh samples of the current weights on the evaluation prompts: reward (and each extra scorer's
    mean, e.g. ``eval_truth_mean``), fidelity, diversity."""
    eval_config = sample_config(config, config.eval_samples_per_prompt, config.eval_seed)
    scores, extras = generate_phase(
        folder / "eval", generator, scorer, prompts, eval_config, rank=rank, world_size=world_size, barrier=barrier,
        save_audio=config.save_audio, payload_dir="embeddings", progress=progress, phase=f"round {round_index}: eval",
        payload=lambda audio: list(scorer.last) if scorer.last is not None else [None] * len(audio), scorers=scorers)
    metrics = {"eval_reward_mean": float(scores.mean()), "eval_reward_std": float(scores.std()),
               "eval_samples": int(scores.size)}
    for name, values in extras.items():
        metrics[f"eval_{name}_mean"], metrics[f"eval_{name}_std"] = float(values.mean()), float(values.std())
    if (judged := judges_mean(extras)) is not None:  # held-out judges' mean (the report draws it by the reward)
        metrics["eval_judges_mean"] = float(judged.mean())
    if not scorer.blocks:
        return metrics

    def embeddings(root: Path) -> dict[str, np.ndarray]:
        stacked = np.stack([[load_tensor(root / "eval" / "embeddings" / f"{item_name(p, c)}.pt").numpy()
                             for c in range(scores.shape[1])] for p in range(len(prompts))])
        return scorer.split(stacked)  # {block: (P, E, width)}

    current, start = embeddings(folder), embeddings(reference)
    for block, values in current.items():
        flat = lambda x: x.reshape(-1, x.shape[-1])  # noqa: E731
        metrics[f"frechet_{block}"] = frechet_distance(flat(values), flat(start[block]))
        metrics[f"diversity_{block}"] = pairwise_cosine_diversity(values) if values.shape[1] > 1 else None
    diversities = [metrics[f"diversity_{b}"] for b in current if metrics[f"diversity_{b}"] is not None]
    metrics["diversity"] = float(np.mean(diversities)) if diversities else None
    return metrics


class _Rounds:
    """The state one process carries through the rounds: which round's weights the model holds."""

    def __init__(self, out: Path, generator, reward, prompts: list[str], eval_prompts: list[str],
                 heldout: bool, config: ExpertIterConfig, trainer, scorer: EmbeddingReward, *, rank: int,
                 world_size: int, barrier, accelerator, progress, callback, scorers: dict | None = None):
        self.out, self.generator, self.reward, self.prompts = out, generator, reward, prompts
        self.eval_prompts, self.heldout, self.config, self.trainer, self.scorer = (
            eval_prompts, heldout, config, trainer, scorer)
        self.rank, self.world_size, self.barrier = rank, world_size, barrier
        self.accelerator, self.progress, self.callback, self.scorers = accelerator, progress, callback, scorers
        self.is_main = rank == 0
        self.loaded = 0  # the round whose weights the model holds

    def use_weights(self, round_index: int) -> None:
        if self.loaded != round_index:
            if round_index == 0:
                raise RuntimeError("the starting weights are no longer in memory")
            self.trainer.load_pretrained(self.out / f"round_{round_index}" / "checkpoint")
            self.loaded = round_index

    def train(self, r: int) -> None:
        """Round ``r`` (1-based): generate with round r-1's weights, filter, fine-tune, checkpoint."""
        config, folder = self.config, self.out / f"round_{r}"
        if (folder / "done.json").is_file():
            if self.is_main and not config.keep_train_state:  # killed between done.json and the clean-up
                (folder / "train_state.pt").unlink(missing_ok=True)
            return
        self.use_weights(r - 1)
        base_seed = config.base_seed + (r - 1) * config.samples_per_prompt
        scores, _ = generate_phase(folder / "samples", self.generator, self.reward, self.prompts,
                                   sample_config(config, config.samples_per_prompt, base_seed), rank=self.rank,
                                   world_size=self.world_size, barrier=self.barrier, payload=self.trainer.encode,
                                   payload_dir="targets", save_audio=config.save_audio, progress=self.progress,
                                   phase=f"round {r}: generate", scorers=self.scorers)
        kept, info = filter_round(folder, self.prompts, scores, config, base_seed, self.is_main)
        summary = {"steps": 0, "loss": None}
        if kept:
            summary = train_round(folder, self.trainer, kept, self.prompts, config, r, rank=self.rank,
                                  world_size=self.world_size, accelerator=self.accelerator, progress=self.progress,
                                  callback=self.callback)
        else:
            logger.warning("round %d: no sample passed the filter (%s); the weights stay as they are", r, info)
        self.loaded = r
        if self.is_main:
            save_checkpoint(folder, self.trainer)
            atomic_write_json(folder / "done.json", {"round": r, "kept": len(kept), **summary})
            if not config.keep_train_state:
                (folder / "train_state.pt").unlink(missing_ok=True)
        self.barrier()
        logger.info("round %d: kept %d of %d samples (threshold %.4f), trained %d steps", r, len(kept),
                    info["samples"], info["threshold"], summary["steps"])

    def evaluate(self, r: int) -> None:
        """Fresh held-out samples of round ``r``'s weights: reward, fidelity, diversity."""
        folder = self.out / f"round_{r}"
        if (folder / "metrics.json").is_file():
            return
        self.use_weights(r)
        metrics = evaluate_round(folder, self.generator, self.scorer, self.eval_prompts, self.config,
                                 self.out / "round_0", rank=self.rank, world_size=self.world_size,
                                 barrier=self.barrier, progress=self.progress, round_index=r, scorers=self.scorers)
        if self.is_main:
            atomic_write_json(folder / "metrics.json", {"round": r, "heldout": self.heldout, **metrics,
                                                        **round_training_metrics(folder, r)})
        self.barrier()


@holds_run_lock
def run_expert_iteration(
    generator,
    reward: Callable,
    prompts: list[str],
    config: ExpertIterConfig,
    out: Path,
    meta: dict,
    *,
    heldout: list[str] | None = None,
    embed: Callable | None = None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
    accelerator=None,
    progress: Progress | None = None,
    callback: Callable[[int, int, float], None] | None = None,
    scorers: dict[str, Callable] | None = None,
    reference: Path | None = None,
) -> list[dict] | None:
    """Run (or resume) expert iteration on the training ``prompts`` into ``out``; evaluate on
    ``heldout`` (or on ``prompts`` when none). Returns the per-round metrics on rank 0, else ``None``.

    ``embed(audio, sample_rate) -> (B, D)``: the embedding for the fidelity metrics when ``reward`` is not a
    TuneJury reward. ``world_size > 1`` needs an ``accelerate.Accelerator``. ``callback(round, step, loss)`` is
    called after each optimizer step. ``scorers`` (name -> ``fn(audio, sample_rate, prompts) -> (B,)``, e.g. the
    truth, judges) give each round ``eval_<name>_mean``; ``reference``: audio for the alarm's distribution check."""
    # 1. Folder, trainer, evaluation scorer
    out, is_main = Path(out), rank == 0
    if world_size > 1 and accelerator is None:
        raise ValueError("a multi-process run needs accelerator= (an accelerate.Accelerator)")
    prepare_run_dir(out, meta, is_main=is_main)
    barrier()
    rounds = _Rounds(out, generator, reward, prompts, list(heldout) if heldout else list(prompts), bool(heldout),
                     config, trainer_for(generator, config.trainable, config.generation),
                     EmbeddingReward(reward, embed), rank=rank, world_size=world_size, barrier=barrier,
                     accelerator=accelerator, progress=progress, callback=callback, scorers=scorers)
    # 2. Round 0 evaluates the starting weights; rounds 1..R generate, filter, fine-tune, then evaluate
    for r in range(config.rounds + 1):
        if r > 0:
            rounds.train(r)
        rounds.evaluate(r)
        if is_main:
            write_metrics(out, config.rounds)
    if is_main:  # every round's generate and eval phases (their progress logs) and its fine-tuning (done.json)
        training = total(json.loads((out / f"round_{r}" / "done.json").read_text()).get("compute")
                         for r in range(1, config.rounds + 1))
        record_run_compute(out, logged_compute(out, recursive=True).add(training))
        expert_iter_alarm(out, reward, rounds.eval_prompts, config.rounds, config.eval_samples_per_prompt, reference)
    return write_metrics(out, config.rounds) if is_main else None


def expert_iteration(
    generator,
    reward: Callable,
    prompts: list[str],
    config: ExpertIterConfig | None = None,
    *,
    out: str | Path | None = None,
    heldout: list[str] | None = None,
    embed: Callable | None = None,
    scorers: dict[str, Callable] | None = None,
) -> list[dict]:
    """Expert iteration in one call: fine-tunes ``generator`` (a MusicGen or Stable Audio adapter) in place
    on its own best samples by ``reward``, round after round; returns the per-round metrics (round 0 =
    the starting model). ``out``: the run folder (resumable; per-round checkpoints), or ``None`` for a
    temporary one that is deleted at the end (the final weights stay in ``generator``). Without
    ``heldout``, a seeded ``config.heldout_fraction`` of ``prompts`` is held out for evaluation."""
    config = config or ExpertIterConfig()
    if heldout is None:
        prompts, heldout = split_prompts(list(prompts), config.heldout_fraction, config.heldout_seed)
    meta = expert_iter_run_meta(config, prompts, heldout, generator, reward)
    if out is not None:
        return run_expert_iteration(generator, reward, prompts, config, Path(out), meta, heldout=heldout, embed=embed,
                                    scorers=scorers)
    with tempfile.TemporaryDirectory(prefix="expert-iter-") as folder:
        return run_expert_iteration(generator, reward, prompts, config, Path(folder), meta, heldout=heldout,
                                    embed=embed, scorers=scorers)


def round_training_metrics(folder: Path, round_index: int) -> dict:
    if round_index == 0:
        return {"kept": None, "kept_fraction": None, "threshold": None, "sample_reward_mean": None,
                "kept_reward_mean": None, "train_loss_first": None, "train_loss_last": None}
    info = json.loads((folder / "filter.json").read_text())
    losses = [r["loss"] for r in read_jsonl(folder / "train_log.jsonl", TRAIN_LOG_FIELDS)]
    return {key: info[key] for key in ("kept", "kept_fraction", "threshold", "sample_reward_mean",
                                       "kept_reward_mean")} | {
        "train_loss_first": losses[0] if losses else None, "train_loss_last": losses[-1] if losses else None}


def write_metrics(out: Path, rounds: int) -> list[dict]:
    rows = [json.loads((out / f"round_{r}" / "metrics.json").read_text()) for r in range(rounds + 1)
            if (out / f"round_{r}" / "metrics.json").is_file()]
    rewrite_jsonl(out / "metrics.jsonl", rows)
    return rows


def expert_iter_run_meta(config: ExpertIterConfig, prompts: list[str], heldout: list[str], generator, reward) -> dict:
    """``run.json`` of an expert-iteration run; ``rounds``, ``save_every`` and ``keep_train_state`` may
    change on a resume."""
    return run_meta("expert-iter", config, {"train": list(prompts), "heldout": list(heldout)}, generator, reward,
                    unchecked=IO_SETTINGS, unchecked_key="io_settings")
