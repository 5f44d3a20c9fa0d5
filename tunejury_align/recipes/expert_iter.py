"""Expert iteration: reward-filtered self-training (ReST, Gulcehre et al., 2023, arXiv 2308.08998;
RAFT, Dong et al., 2023, arXiv 2304.06767), as in TuneJury's expert-iteration protocol.

Each round: generate ``samples_per_prompt`` seeded samples per prompt with the current weights (the
best-of-N machinery), score them with the frozen reward, keep the samples that pass the filter,
fine-tune the generator on them with its ordinary training loss (:mod:`.finetune`), and start the
next round from the result. This module holds the pieces: the config, the filter, the training loop
(AdamW, LR schedule, gradient accumulation, EMA, DDP-averaged gradients) and the fidelity metrics;
:mod:`.expert_iter_run` runs the rounds in a resumable folder.

Batches. ``batch_size`` is the *global* batch of one optimizer step. The kept samples are read in
a seeded random order (one permutation per epoch, a pure function of ``train_seed``, round and
epoch), step ``s`` takes positions ``[s B, (s + 1) B)`` of that stream, and slot ``j`` of the batch
goes to accumulation micro-step ``j // (micro W)`` on process ``(j // micro) % W`` (``W`` processes,
``micro = B / (accumulation W)``). Every micro-batch loss is a mean, scaled by ``1 / accumulation``,
and DDP averages over processes, so 1 process with batch ``2b`` and 2 processes with ``b`` each take
the same step (up to float summation order). A sample's random draws (condition dropout, diffusion
time and noise) come from its own seed, a function of (``train_seed``, round, step, slot).
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .best_of_n import REWARD_PROMPT_MODES
from .finetune import LossModule

LR_SCHEDULERS = ("constant", "linear", "cosine")


@dataclass
class ExpertIterConfig:
    """Expert-iteration settings (defaults: TuneJury's protocol, 9 samples per prompt, global top 10 %,
    AdamW, batch 16, EMA 0.999; it reports lr 1e-6 / 5e-6 / 1e-5 with 5K steps)."""

    rounds: int = field(default=1, metadata={"help": "generate / filter / fine-tune rounds"})
    samples_per_prompt: int = field(default=9, metadata={"help": "samples per training prompt per round (K)"})
    base_seed: int = field(default=42, metadata={"help": "round r (1-based) sample c uses seed base_seed + (r-1) K + c"})
    prompt_prefix: str = field(default="high quality instrumental music, ",
                               metadata={"help": "prepended to each prompt for generation and training"})
    reward_prompt: str = field(default="prompt", metadata={
        "help": "text the reward sees: 'prompt', 'generation' (with the prefix) or 'empty'"})
    generation_batch_size: int = field(default=8, metadata={
        "help": "samples of one prompt generated and scored together (the unit of resume)"})
    generation: dict = field(default_factory=dict, metadata={
        "help": "generator options (e.g. duration, top_k, temperature, guidance_scale, steps)"})
    threshold: float | None = field(default=None, metadata={"help": "filter: keep samples scoring >= threshold"})
    keep_top: float | None = field(default=None, metadata={
        "help": "filter: keep the global top fraction of the round's samples (0.1 if no filter is set)"})
    keep_per_prompt: int | None = field(default=None, metadata={"help": "filter: keep each prompt's top k samples"})
    train_steps: int = field(default=5000, metadata={"help": "optimizer steps per round"})
    batch_size: int = field(default=16, metadata={"help": "global batch per optimizer step (all processes)"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-steps per optimizer step"})
    learning_rate: float = field(default=5e-6, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    adam_betas: list = field(default_factory=lambda: [0.9, 0.999], metadata={"help": "AdamW betas"})
    adam_eps: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    lr_scheduler: str = field(default="constant", metadata={"help": f"one of {LR_SCHEDULERS} (after warm-up)"})
    warmup_steps: int = field(default=0, metadata={"help": "linear LR warm-up steps"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0 disables)"})
    ema_decay: float = field(default=0.999, metadata={
        "help": "EMA decay of the trained weights; the round's checkpoint holds the EMA weights (0: raw weights)"})
    ema_warmup: bool = field(default=True, metadata={
        "help": "decay min(ema_decay, (1 + n) / (10 + n)) at update n (diffusers' EMAModel)"})
    trainable: list | None = field(default=None, metadata={
        "help": "regexes of parameter names to train (default: MusicGen '^decoder\\.', '^enc_to_dec_proj\\.'; "
                "Stable Audio '^transformer\\.')"})
    condition_dropout: float = field(default=0.1, metadata={
        "help": "share of items trained with the null text condition (keeps CFG's unconditional branch trained)"})
    train_seed: int = field(default=0, metadata={"help": "seed of the data order and the loss's random draws"})
    save_every: int = field(default=500, metadata={"help": "steps between resumable training-state saves"})
    keep_train_state: bool = field(default=False, metadata={"help": "keep train_state.pt after a round finishes"})
    heldout_fraction: float = field(default=0.1, metadata={
        "help": "share of --prompts held out for evaluation (seeded split) when --heldout is not given; "
                "0 evaluates on the training prompts"})
    heldout_seed: int = field(default=0, metadata={"help": "seed of the held-out split"})
    eval_samples_per_prompt: int = field(default=4, metadata={"help": "evaluation samples per held-out prompt"})
    eval_seed: int = field(default=1000, metadata={"help": "evaluation sample c uses seed eval_seed + c, every round"})
    save_audio: bool = field(default=False, metadata={"help": "write every sample's audio (WAV)"})

    def __post_init__(self):
        filters = [name for name in ("threshold", "keep_top", "keep_per_prompt") if getattr(self, name) is not None]
        if not filters:
            self.keep_top = 0.1
        elif len(filters) > 1:
            raise ValueError(f"set one filter, got {filters}")
        positive = ("rounds", "samples_per_prompt", "generation_batch_size", "train_steps", "batch_size",
                    "gradient_accumulation_steps", "save_every", "eval_samples_per_prompt")
        bad = [name for name in positive if int(getattr(self, name)) < 1]
        if bad:
            raise ValueError(f"{bad} must be >= 1")
        if self.keep_top is not None and not 0 < self.keep_top <= 1:
            raise ValueError(f"keep_top must be in (0, 1], got {self.keep_top}")
        if self.keep_per_prompt is not None and not 1 <= self.keep_per_prompt <= self.samples_per_prompt:
            raise ValueError(f"keep_per_prompt must be in [1, samples_per_prompt], got {self.keep_per_prompt}")
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError("batch_size must be a multiple of gradient_accumulation_steps")
        if self.reward_prompt not in REWARD_PROMPT_MODES:
            raise ValueError(f"reward_prompt must be one of {REWARD_PROMPT_MODES}, got {self.reward_prompt!r}")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {LR_SCHEDULERS}, got {self.lr_scheduler!r}")
        if not 0 <= self.ema_decay < 1 or not 0 <= self.condition_dropout < 1 or not 0 <= self.heldout_fraction < 1:
            raise ValueError("ema_decay, condition_dropout and heldout_fraction must be in [0, 1)")
        if len(self.adam_betas) != 2 or self.learning_rate <= 0 or self.warmup_steps < 0:
            raise ValueError("adam_betas needs 2 values, learning_rate > 0, warmup_steps >= 0")
        if self.trainable is not None and (isinstance(self.trainable, str) or not self.trainable):
            raise ValueError("trainable must be a non-empty list of regexes (or null for the family default)")


def split_prompts(prompts: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held-out): ``round(fraction P)`` prompts (at least 1, at most P - 1) picked by a seeded
    permutation, both in their original order. ``fraction = 0`` or one prompt: no held-out prompts."""
    if fraction <= 0 or len(prompts) < 2:
        return list(prompts), []
    count = min(len(prompts) - 1, max(1, round(fraction * len(prompts))))
    held = set(np.random.default_rng(seed).permutation(len(prompts))[:count].tolist())
    return [p for i, p in enumerate(prompts) if i not in held], [p for i, p in enumerate(prompts) if i in held]


def select_kept(scores: np.ndarray, config: ExpertIterConfig) -> tuple[list[tuple[int, int]], dict]:
    """``(P, K)`` scores -> kept ``(prompt, sample)`` pairs (sorted) and the filter record with the
    threshold actually used (the lowest kept score for the top-fraction / per-prompt filters; ties
    at the boundary go to the lower (prompt, sample) index)."""
    scores = np.asarray(scores, dtype=np.float64)
    num_prompts, per_prompt = scores.shape
    info: dict = {"samples": int(scores.size)}
    if config.threshold is not None:
        kept = [(int(p), int(c)) for p, c in zip(*np.nonzero(scores >= config.threshold))]
        info.update(filter="threshold", threshold=float(config.threshold))
    elif config.keep_top is not None:
        count = max(1, int(round(config.keep_top * scores.size)))
        order = sorted(range(scores.size), key=lambda i: (-scores.flat[i], i))[:count]
        kept = sorted(divmod(int(i), per_prompt) for i in order)
        info.update(filter="keep_top", keep_top=config.keep_top, threshold=float(scores.flat[order[-1]]))
    else:
        kept, lowest = [], []
        for p in range(num_prompts):
            top = sorted(range(per_prompt), key=lambda c: (-scores[p, c], c))[: config.keep_per_prompt]
            kept += [(p, c) for c in sorted(top)]
            lowest.append(float(scores[p, top[-1]]))
        info.update(filter="keep_per_prompt", keep_per_prompt=config.keep_per_prompt, threshold=min(lowest),
                    per_prompt_thresholds=lowest)
    info.update(kept=len(kept), kept_fraction=len(kept) / scores.size)
    return kept, info


# -- fidelity and diversity ------------------------------------------------------------------------
def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between Gaussian fits of ``(N, D)`` and ``(M, D)`` embeddings (N, M >= 2):
    ``|mu_x - mu_y|^2 + tr(S_x) + tr(S_y) - 2 tr((S_x S_y)^(1/2))`` (the FAD/FID formula).

    ``S_x S_y`` is similar to the symmetric PSD matrix ``S_x^(1/2) S_y S_x^(1/2)``, so
    ``tr((S_x S_y)^(1/2))`` is the sum of the square roots of that matrix's eigenvalues: two
    ``eigh`` calls in float64 (negative round-off eigenvalues clipped to 0) instead of a
    non-symmetric ``sqrtm``. Few samples in many dimensions give rank-deficient covariances and a
    biased estimate: compare rounds only on the same evaluation set."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("the Frechet distance needs at least 2 embeddings per set")
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    cov_x, cov_y = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    values, vectors = np.linalg.eigh(cov_x)
    sqrt_x = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = sqrt_x @ cov_y @ sqrt_x
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    distance = ((mean_x - mean_y) ** 2).sum() + np.trace(cov_x) + np.trace(cov_y) - 2 * trace_sqrt
    return float(max(distance, 0.0))


def pairwise_cosine_diversity(embeddings: np.ndarray) -> float:
    """``(P, E, D)`` embeddings of E samples for each of P prompts -> the mean over prompts of the mean
    pairwise cosine distance ``1 - cos`` among a prompt's samples (E >= 2; 0 = identical samples)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.shape[1] < 2:
        raise ValueError("diversity needs at least 2 samples per prompt")
    unit = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
    cosine = unit @ unit.transpose(0, 2, 1)  # (P, E, E)
    off_diagonal = ~np.eye(emb.shape[1], dtype=bool)
    return float((1.0 - cosine[:, off_diagonal]).mean())


# -- training --------------------------------------------------------------------------------------
def derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


@functools.lru_cache(maxsize=8)
def _epoch_order(seed: int, round_index: int, epoch: int, count: int) -> tuple[int, ...]:
    return tuple(np.random.default_rng(derived_seed(seed, round_index, epoch)).permutation(count).tolist())


def global_batch(step: int, count: int, batch_size: int, seed: int, round_index: int) -> list[int]:
    """Indices of the kept samples in optimizer step ``step``'s global batch (see the module doc)."""
    positions = range(step * batch_size, (step + 1) * batch_size)
    return [_epoch_order(seed, round_index, pos // count, count)[pos % count] for pos in positions]


class EMA:
    """Exponential moving average of the trained parameters; decay ``min(decay, (1 + n) / (10 + n))``
    at update ``n`` with warm-up (diffusers' ``EMAModel.get_decay``), else ``decay``."""

    def __init__(self, params: dict[str, torch.Tensor], decay: float, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.shadow = {name: p.detach().clone() for name, p in params.items()}

    def decay_at(self, update: int) -> float:
        return min(self.decay, (1 + update) / (10 + update)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor], update: int) -> None:
        weight = 1.0 - self.decay_at(update)
        for name, param in params.items():
            self.shadow[name].lerp_(param.detach(), weight)

    @torch.no_grad()
    def copy_to(self, params: dict[str, torch.Tensor]) -> None:
        for name, param in params.items():
            param.copy_(self.shadow[name])


def rng_state() -> dict:
    """The process's torch / CUDA / numpy / python RNG states, as tensors and lists of ints."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "numpy": {"keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached)},
            "python": {"version": int(version), "internal": [int(i) for i in internal], "gauss_next": gauss_next}}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", np.array(numpy["keys"], dtype=np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))


def lr_lambda(config: ExpertIterConfig) -> Callable[[int], float]:
    warmup, total, kind = config.warmup_steps, config.train_steps, config.lr_scheduler

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return {"constant": 1.0, "linear": 1.0 - progress, "cosine": 0.5 * (1 + math.cos(math.pi * progress))}[kind]

    return factor


@dataclass
class TrainData:
    """The kept samples: ``targets (N, ...)`` (codes or latents) and their generation ``texts (N,)``."""

    targets: torch.Tensor
    texts: list[str]


def fine_tune(
    trainer,
    data: TrainData,
    config: ExpertIterConfig,
    round_index: int,
    *,
    state: dict | None = None,
    save_state: Callable[[dict], None] | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
    accelerator=None,
) -> dict:
    """Fine-tune ``trainer``'s generator on ``data`` for ``config.train_steps`` steps (resuming from
    ``state``, a dict ``save_state`` was given); leaves the EMA weights (``ema_decay > 0``) in the
    model. ``save_state(state)`` is called on rank 0 every ``save_every`` steps and at the end;
    ``on_step(step, loss, lr)`` after each step. Returns ``{"steps", "loss"}`` (the last step's loss)."""
    # 1. Optimizer, schedule, EMA
    params = trainer.parameters_to_train()
    optimizer = torch.optim.AdamW(list(params.values()), lr=config.learning_rate, betas=tuple(config.adam_betas),
                                  eps=config.adam_eps, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    ema = EMA(params, config.ema_decay, config.ema_warmup) if config.ema_decay > 0 else None
    micro, rest = divmod(config.batch_size, config.gradient_accumulation_steps * world_size)
    if rest or micro < 1:
        raise ValueError(f"batch_size {config.batch_size} is not a multiple of gradient_accumulation_steps "
                         f"({config.gradient_accumulation_steps}) x processes ({world_size})")
    # 2. Resume
    step = 0
    if state is not None:
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(state["params"][name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.shadow = {name: state["ema"][name].to(params[name].device) for name in params}
        step = int(state["step"])
        set_rng_state(state["rng"])

    def snapshot() -> dict:
        return {"round": round_index, "step": step, "train_steps": config.train_steps,
                "params": {n: p.detach().cpu().clone() for n, p in params.items()},
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "ema": {n: t.cpu().clone() for n, t in ema.shadow.items()} if ema is not None else None,
                "rng": rng_state(),
                "data_order": {"train_seed": config.train_seed, "round": round_index, "num_items": len(data.texts),
                               "position": step * config.batch_size}}

    # 3. Train (DDP averages the gradients of the last micro-step across processes)
    trainer.train_mode(True)
    model = LossModule(trainer, config.condition_dropout)
    if world_size > 1:
        with warnings.catch_warnings():  # torch >= 2.10 renames DDP's broadcast_buffers; accelerate passes it
            warnings.filterwarnings("ignore", message=".*broadcast_buffers", category=FutureWarning)
            model = accelerator.prepare_model(model, device_placement=False)
    device = trainer.device
    fork_devices = [device] if device.type == "cuda" else []
    accumulation = config.gradient_accumulation_steps
    last_loss = None
    try:
        while step < config.train_steps:
            batch = global_batch(step, len(data.texts), config.batch_size, config.train_seed, round_index)
            seeds = [derived_seed(config.train_seed, round_index, step, slot) for slot in range(len(batch))]
            optimizer.zero_grad(set_to_none=True)
            step_loss = torch.zeros((), device=device)
            for micro_step in range(accumulation):
                start = (micro_step * world_size + rank) * micro
                items = batch[start:start + micro]
                no_sync = world_size > 1 and micro_step < accumulation - 1
                with model.no_sync() if no_sync else contextlib.nullcontext(), \
                        torch.random.fork_rng(devices=fork_devices):
                    torch.manual_seed(derived_seed(config.train_seed, round_index, step, 1_000_000 + start))
                    loss = model(data.targets[items], [data.texts[i] for i in items], seeds[start:start + micro])
                    (loss / accumulation).backward()
                step_loss += loss.detach() / accumulation
            if world_size > 1:
                torch.distributed.all_reduce(step_loss)
                step_loss /= world_size
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(list(params.values()), config.max_grad_norm)
            learning_rate = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(params, step)
            step += 1
            last_loss = float(step_loss)
            if on_step is not None:
                on_step(step, last_loss, learning_rate)
            if save_state is not None and rank == 0 and (step % config.save_every == 0 or step == config.train_steps):
                save_state(snapshot())
    finally:
        trainer.train_mode(False)
        optimizer.zero_grad(set_to_none=True)
        if accelerator is not None:
            accelerator.free_memory()
    if ema is not None:
        ema.copy_to(params)
    return {"steps": step, "loss": last_loss}


def train_data(targets: list[torch.Tensor], texts: list[str]) -> TrainData:
    if not targets:
        raise ValueError("no kept samples to train on")
    return TrainData(torch.stack(targets), list(texts))

