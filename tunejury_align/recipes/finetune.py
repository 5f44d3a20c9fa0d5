"""The fine-tuning loop of expert iteration, over a generator family's :class:`~tunejury_align.generators.base.Trainer`.

AdamW, an LR schedule, gradient accumulation, gradient clipping, an EMA of the trained weights and
DDP-averaged gradients; resumable from a saved state (weights, optimizer, schedule, EMA, step, RNG).

Batches. ``train_batch_size`` is the *global* batch of one optimizer step. The kept samples are read in
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
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .expert_iter import ExpertIterConfig


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
    """Exponential moving average of the trained parameters, kept by torch's ``AveragedModel`` (over a
    container of just those parameters, so the copy costs the trained weights only, not the model).

    Decay ``min(decay, (1 + n) / (10 + n))`` at update ``n`` with warm-up (diffusers' ``EMAModel``
    schedule), else ``decay``; update ``n`` is ``shadow.lerp_(param, 1 - decay)``."""

    def __init__(self, params: dict[str, torch.Tensor], decay: float, warmup: bool = True):
        from torch.optim.swa_utils import AveragedModel

        self.decay, self.warmup, self.names = decay, warmup, list(params)
        container = nn.ParameterList(list(params.values()))
        self.averaged = AveragedModel(container, multi_avg_fn=self._average, use_buffers=False)
        self.averaged.update_parameters(container)  # the starting weights (AveragedModel's first update copies)

    def decay_at(self, update: int) -> float:
        return min(self.decay, (1 + update) / (10 + update)) if self.warmup else self.decay

    def _average(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        weight = 1.0 - self.decay_at(int(num_averaged) - 1)  # num_averaged counts the starting copy
        for shadow, param in zip(averaged, current):
            shadow.lerp_(param, weight)

    @property
    def shadow(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, (p.detach() for p in self.averaged.module.parameters())))

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor]) -> None:
        self.averaged.update_parameters(nn.ParameterList(list(params.values())))

    @torch.no_grad()
    def restore(self, shadow: dict[str, torch.Tensor], updates: int) -> None:
        for name, param in zip(self.names, self.averaged.module.parameters()):
            param.copy_(shadow[name])
        self.averaged.n_averaged.fill_(updates + 1)

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


def lr_schedule(optimizer: torch.optim.Optimizer, config: ExpertIterConfig):
    """transformers' ``get_scheduler``: linear warm-up over ``warmup_steps`` (from 0), then constant,
    linear decay to 0 or half a cosine over the remaining steps."""
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup" if config.warmup_steps else "constant"}.get(
        config.lr_scheduler, config.lr_scheduler)
    return get_scheduler(name, optimizer, num_warmup_steps=config.warmup_steps,
                         num_training_steps=config.train_steps)


@dataclass
class TrainData:
    """The kept samples: ``targets (N, ...)`` (codes or latents) and their generation ``texts (N,)``."""

    targets: torch.Tensor
    texts: list[str]


class _Optimisation:
    """The trained parameters with their AdamW, LR schedule and EMA; saved and restored as one state."""

    def __init__(self, trainer, config: ExpertIterConfig):
        self.config = config
        self.params = trainer.parameters_to_train()
        self.optimizer = torch.optim.AdamW(list(self.params.values()), lr=config.learning_rate,
                                           betas=tuple(config.adam_betas), eps=config.adam_eps,
                                           weight_decay=config.weight_decay)
        self.scheduler = lr_schedule(self.optimizer, config)
        self.ema = EMA(self.params, config.ema_decay, config.ema_warmup) if config.ema_decay > 0 else None
        self.step = 0

    def restore(self, state: dict) -> None:
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(state["params"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        if self.ema is not None:
            self.ema.restore(state["ema"], updates=self.step)
        set_rng_state(state["rng"])

    def snapshot(self, round_index: int, num_items: int) -> dict:
        config, ema = self.config, self.ema
        return {"round": round_index, "step": self.step, "train_steps": config.train_steps,
                "params": {n: p.detach().cpu().clone() for n, p in self.params.items()},
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "ema": {n: t.cpu().clone() for n, t in ema.shadow.items()} if ema is not None else None,
                "rng": rng_state(),
                "data_order": {"train_seed": config.train_seed, "round": round_index, "num_items": num_items,
                               "position": self.step * config.train_batch_size}}

    def apply(self) -> float:
        """Clip, step the optimizer, the schedule and the EMA; returns the learning rate used."""
        if self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.config.max_grad_norm)
        learning_rate = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.params)
        self.step += 1
        return learning_rate


def _step_loss(model, data: TrainData, config: ExpertIterConfig, round_index: int, step: int, *, rank: int,
               world_size: int, micro: int, device: torch.device) -> torch.Tensor:
    """Forward and backward of one optimizer step's share of this process (its micro-batches); returns the
    step's mean loss over every process."""
    accumulation = config.gradient_accumulation_steps
    fork_devices = [device] if device.type == "cuda" else []
    batch = global_batch(step, len(data.texts), config.train_batch_size, config.train_seed, round_index)
    seeds = [derived_seed(config.train_seed, round_index, step, slot) for slot in range(len(batch))]
    step_loss = torch.zeros((), device=device)
    for micro_step in range(accumulation):
        start = (micro_step * world_size + rank) * micro
        items = batch[start:start + micro]
        no_sync = world_size > 1 and micro_step < accumulation - 1
        with model.no_sync() if no_sync else contextlib.nullcontext(), torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(derived_seed(config.train_seed, round_index, step, 1_000_000 + start))
            loss = model(data.targets[items], [data.texts[i] for i in items], seeds[start:start + micro])
            (loss / accumulation).backward()
        step_loss += loss.detach() / accumulation
    if world_size > 1:
        torch.distributed.all_reduce(step_loss)
        step_loss /= world_size
    return step_loss


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
    # 1. Optimizer, schedule, EMA; resume
    micro, rest = divmod(config.train_batch_size, config.gradient_accumulation_steps * world_size)
    if rest or micro < 1:
        raise ValueError(f"train_batch_size {config.train_batch_size} is not a multiple of gradient_accumulation_steps "
                         f"({config.gradient_accumulation_steps}) x processes ({world_size})")
    optimisation = _Optimisation(trainer, config)
    if state is not None:
        optimisation.restore(state)
    # 2. Train (DDP averages the gradients of the last micro-step across processes)
    trainer.train_mode(True)
    model = LossModule(trainer, config.condition_dropout)
    if world_size > 1:
        with warnings.catch_warnings():  # torch >= 2.10 renames DDP's broadcast_buffers; accelerate passes it
            warnings.filterwarnings("ignore", message=".*broadcast_buffers", category=FutureWarning)
            model = accelerator.prepare_model(model, device_placement=False)
    last_loss = None
    try:
        while optimisation.step < config.train_steps:
            optimisation.optimizer.zero_grad(set_to_none=True)
            step_loss = _step_loss(model, data, config, round_index, optimisation.step, rank=rank,
                                   world_size=world_size, micro=micro, device=trainer.device)
            learning_rate = optimisation.apply()
            step, last_loss = optimisation.step, float(step_loss)
            if on_step is not None:
                on_step(step, last_loss, learning_rate)
            if save_state is not None and rank == 0 and (step % config.save_every == 0 or step == config.train_steps):
                save_state(optimisation.snapshot(round_index, len(data.texts)))
    finally:
        trainer.train_mode(False)
        optimisation.optimizer.zero_grad(set_to_none=True)
        if accelerator is not None:
            accelerator.free_memory()
    # 3. The EMA weights become the model's
    if optimisation.ema is not None:
        optimisation.ema.copy_to(optimisation.params)
    return {"steps": optimisation.step, "loss": last_loss}


def train_data(targets: list[torch.Tensor], texts: list[str]) -> TrainData:
    if not targets:
        raise ValueError("no kept samples to train on")
    return TrainData(torch.stack(targets), list(texts))


class LossModule(nn.Module):
    """``forward(targets, texts, seeds) -> loss``: the trainer's loss as a module, so that DDP
    (``accelerator.prepare_model``) can wrap it and average the gradients across processes."""

    def __init__(self, trainer, condition_dropout: float):
        super().__init__()
        self.root = trainer.root
        self.trainer, self.condition_dropout = trainer, condition_dropout

    def forward(self, targets: torch.Tensor, texts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        return self.trainer.loss(targets, texts, seeds, self.condition_dropout)
