"""Train the TuneJury head on pair features with the RankNet loss, as published.

TuneJury (Kim et al., 2026, arXiv 2606.17006), after RankNet (Burges et al., 2005): both clips of a
pair are scored by the shared head and ``BCEWithLogits(s(A) - s(B), target)`` is minimised, target
1 / 0 / 0.5 for A wins / B wins / tie. Ties stay in training; accuracy counts non-ties only. AdamW
(lr 1e-4, weight decay 1e-3), batch 32, up to 1000 epochs, early stop after 30 epochs without a
validation-loss improvement of at least 1e-4, keep the best, seed 42.

The result is saved in the released layout (a plain ``state_dict`` of :class:`TuneJuryHead` plus the
``<checkpoint>.json`` sidecar ``{"input_dim", "exclude"}``), so it loads in
:meth:`TuneJuryReward.from_pretrained` and :func:`load_head` unchanged.
"""

from __future__ import annotations

import copy
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..rundir import atomic_write_bytes, atomic_write_text
from .head import HeadSpec, TuneJuryHead
from .metrics import pairwise_accuracy

logger = logging.getLogger(__name__)


@dataclass
class HeadTrainingConfig:
    """Head-training settings (defaults: the published hyper-parameters)."""

    lr: float = field(default=1e-4, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=1e-3, metadata={"help": "AdamW weight decay"})
    train_batch_size: int = field(default=32, metadata={"help": "pairs per step (both clips scored in one forward)"})
    max_epochs: int = field(default=1000, metadata={"help": "upper bound on epochs"})
    patience: int = field(default=30, metadata={"help": "stop after this many epochs without improvement"})
    min_delta: float = field(default=1e-4, metadata={"help": "smallest validation-loss decrease that counts"})
    seed: int = field(default=42, metadata={"help": "seed of initialisation, shuffling, dropout and the split"})
    val_fraction: float = field(default=0.1, metadata={
        "help": "fraction of pairs held out (random, seeded) for early stopping when no validation set is "
                "given; 0 monitors the training loss"})
    exclude: list = field(default_factory=list, metadata={
        "help": "input blocks left out: any of clap_audio, mert, text"})
    device: str = field(default="cpu", metadata={"help": "torch device"})

    def __post_init__(self):
        for name in ("lr", "weight_decay", "min_delta", "val_fraction"):  # YAML reads "1e-3" as a string
            setattr(self, name, float(getattr(self, name)))
        for name in ("train_batch_size", "max_epochs", "patience", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not float(value).is_integer():
                raise ValueError(f"{name} must be an integer, got {value!r}")
            setattr(self, name, int(float(value)))
        if self.lr <= 0 or self.weight_decay < 0 or self.min_delta < 0:
            raise ValueError("lr must be > 0; weight_decay and min_delta >= 0")
        if self.train_batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("train_batch_size, max_epochs and patience must be >= 1")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if isinstance(self.exclude, str):
            self.exclude = [b for b in self.exclude.split(",") if b]
        HeadSpec(tuple(self.exclude))  # raises for unknown blocks or nothing left


@dataclass
class HeadTrainingResult:
    head: TuneJuryHead
    spec: HeadSpec
    best_epoch: int
    epochs: int
    best_loss: float
    train_accuracy: float
    val_accuracy: float | None
    monitored: str
    history: list[dict]

    def summary(self) -> dict:
        return {"best_epoch": self.best_epoch, "epochs": self.epochs, "best_loss": self.best_loss,
                "monitored": self.monitored, "train_accuracy": self.train_accuracy,
                "val_accuracy": self.val_accuracy, "input_dim": self.spec.input_dim,
                "exclude": list(self.spec.exclude)}


def split_pairs(count: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random, seeded ``(train indices, validation indices)``."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    held_out = int(round(count * val_fraction))
    return order[held_out:], order[:held_out]


def train_head(features_a: torch.Tensor, features_b: torch.Tensor, targets: torch.Tensor,
               config: HeadTrainingConfig, *, validation: tuple | None = None,
               progress: Callable[[dict], None] | None = None) -> HeadTrainingResult:
    """Train a fresh :class:`TuneJuryHead` with the RankNet loss, as published: each step scores both clips of
    each of its pairs in one forward (BatchNorm sees one batch of 2 x ``train_batch_size`` rows).

    ``features_a``, ``features_b``: ``(M, input_dim)`` head inputs of the A and B clips, with
    ``input_dim`` matching ``config.exclude``; ``targets (M,)`` 1 / 0 / 0.5. ``validation``:
    ``(features_a, features_b, targets)`` for early stopping; without it ``config.val_fraction`` of the
    pairs is held out. Returns the best head (eval mode). The global RNG state is left untouched.
    """
    spec = HeadSpec(tuple(config.exclude))
    if features_a.shape != features_b.shape or features_a.ndim != 2 or features_a.shape[1] != spec.input_dim:
        raise ValueError(f"features must both be (M, {spec.input_dim}) for blocks {list(spec.blocks)}; got "
                         f"{tuple(features_a.shape)} and {tuple(features_b.shape)}")
    count = len(features_a)
    table = torch.cat([features_a, features_b])  # pair i is (row i, row M + i): each side its own row
    pairs = torch.stack([torch.arange(count), torch.arange(count, 2 * count)], dim=1)
    held_out = None
    if validation is not None:
        val_a, val_b, val_targets = validation
        held_out = (torch.cat([val_a, val_b]), torch.stack([torch.arange(len(val_a)),
                                                            torch.arange(len(val_a), 2 * len(val_a))], dim=1),
                    val_targets)
    return train_head_on_table(table, pairs, targets, config, validation=held_out, progress=progress)


def train_head_on_table(features: torch.Tensor, pairs: torch.Tensor, targets: torch.Tensor,
                        config: HeadTrainingConfig, *, validation: tuple | None = None, groups: torch.Tensor | None = None,
                        progress: Callable[[dict], None] | None = None) -> HeadTrainingResult:
    """RankNet training (the loss, optimiser and early stopping of :func:`train_head`) on pairs of rows of one
    feature table: ``features (N, input_dim)`` of N clips, ``pairs (M, 2)`` row indices (A, B), ``targets (M,)``
    1 / 0 / 0.5. Each step scores the distinct clips of its pairs once, in one forward (BatchNorm sees those
    clips), so a table of few clips in many pairs trains at the cost of its clips, not of its pairs.
    ``groups (M,)`` (e.g. each pair's prompt): a step then takes whole groups, shuffled, until it holds
    ``train_batch_size`` pairs or more, so that it scores only its groups' clips. ``validation``: ``(features (V, D),
    pairs (P, 2), targets (P,))`` for early stopping (its own table); without it ``config.val_fraction`` of the
    pairs is held out (over the same table). Returns the best head (eval mode); the global RNG state is left
    untouched.
    """
    # 1. Check the inputs and split.
    spec = HeadSpec(tuple(config.exclude))
    if features.ndim != 2 or features.shape[1] != spec.input_dim:
        raise ValueError(f"features must be (N, {spec.input_dim}) for blocks {list(spec.blocks)}; got "
                         f"{tuple(features.shape)}")
    check_pairs(pairs, targets, len(features))
    device = torch.device(config.device)
    features, pairs, targets = features.float().to(device), pairs.long().to(device), targets.float().to(device)
    if groups is not None and tuple(groups.shape) != (len(pairs),):
        raise ValueError(f"groups must be (M,) = ({len(pairs)},), one per pair; got {tuple(groups.shape)}")
    if validation is None:
        train_index, val_index = split_pairs(len(targets), config.val_fraction, config.seed)
        train_index, val_index = train_index.to(device), val_index.to(device)
        validation = (features, pairs[val_index], targets[val_index])
        pairs, targets = pairs[train_index], targets[train_index]
        groups = groups[train_index.cpu()] if groups is not None else None
    else:
        check_pairs(validation[1], validation[2], len(validation[0]))
        validation = (validation[0].float().to(device), validation[1].long().to(device),
                      validation[2].float().to(device))
    if len(targets) == 0:
        raise ValueError("no training pairs")
    monitored = "val_loss" if len(validation[2]) else "train_loss"
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(config.seed)
        # 2. Model, optimiser.
        head = TuneJuryHead(spec.input_dim).to(device)
        # the fused kernel: one pass over the weights and both moments per step (3x faster for the head on a CPU)
        optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                      fused=device.type in ("cpu", "cuda"))
        shuffle = torch.Generator().manual_seed(config.seed)
        best_loss, best_state, best_epoch, stale, history = float("inf"), None, 0, 0, []
        # 3. Epochs, with early stopping on the monitored loss.
        for epoch in range(1, config.max_epochs + 1):
            head.train()
            total = 0.0
            for batch in epoch_batches(len(targets), config.train_batch_size, shuffle, groups):
                batch = batch.to(device)
                rows, where = torch.unique(pairs[batch], return_inverse=True)  # each clip of the batch once
                scores = head(features[rows])
                margins = scores[where[:, 0]] - scores[where[:, 1]]
                loss = F.binary_cross_entropy_with_logits(margins, targets[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            record = {"epoch": epoch, "train_loss": total / len(targets)}
            if monitored == "val_loss":
                record["val_loss"], record["val_accuracy"] = evaluate_table(head, *validation)
                current = record["val_loss"]
            else:
                current, _ = evaluate_table(head, features, pairs, targets)
            history.append(record)
            if progress is not None:
                progress(record)
            logger.info("epoch %d: %s", epoch, record)
            if current < best_loss - config.min_delta:
                best_loss, best_state, best_epoch, stale = current, copy.deepcopy(head.state_dict()), epoch, 0
            else:
                stale += 1
                if stale >= config.patience:
                    break
    # 4. Keep the best.
    if best_state is None:
        raise ValueError(f"training diverged: the monitored loss is {current} from the first epoch")
    head.load_state_dict(best_state)
    head.eval().requires_grad_(False)
    _, train_accuracy = evaluate_table(head, features, pairs, targets)
    val_accuracy = evaluate_table(head, *validation)[1] if monitored == "val_loss" else None
    return HeadTrainingResult(head=head.cpu(), spec=spec, best_epoch=best_epoch, epochs=len(history),
                              best_loss=best_loss, train_accuracy=train_accuracy, val_accuracy=val_accuracy,
                              monitored=monitored, history=history)


def epoch_batches(count: int, batch_size: int, shuffle: torch.Generator, groups: torch.Tensor | None = None):
    """One epoch's batches of pair indices: a shuffled order cut every ``batch_size`` pairs, or with ``groups``
    the groups in a shuffled order, each batch whole groups adding up to ``batch_size`` pairs or more."""
    if groups is None:
        order = torch.randperm(count, generator=shuffle)
        return [order[start:start + batch_size] for start in range(0, count, batch_size)]
    names = torch.unique(groups)
    batches, current, size = [], [], 0
    for name in names[torch.randperm(len(names), generator=shuffle)]:
        members = torch.nonzero(groups == name).flatten()
        current.append(members)
        size += len(members)
        if size >= batch_size:
            batches.append(torch.cat(current))
            current, size = [], 0
    if current:
        batches.append(torch.cat(current))
    return batches


def check_pairs(pairs: torch.Tensor, targets: torch.Tensor, rows: int) -> None:
    """``pairs (M, 2)`` of distinct row indices below ``rows`` and ``targets (M,)`` of 1 / 0 / 0.5."""
    if pairs.ndim != 2 or pairs.shape[1] != 2 or targets.shape != (pairs.shape[0],):
        raise ValueError(f"pairs must be (M, 2) and targets (M,); got {tuple(pairs.shape)} and {tuple(targets.shape)}")
    if len(pairs) and (int(pairs.min()) < 0 or int(pairs.max()) >= rows):
        raise ValueError(f"pair indices must lie in [0, {rows}) (the feature table's rows)")
    if bool((pairs[:, 0] == pairs[:, 1]).any()):
        raise ValueError("a pair compares a clip with itself")
    if not bool(torch.isin(targets, torch.tensor([0.0, 0.5, 1.0], device=targets.device)).all()):
        raise ValueError("targets must be (M,) with values 1 (A wins), 0 (B wins) or 0.5 (tie)")


@torch.no_grad()
def evaluate_table(head: TuneJuryHead, features, pairs, targets, batch_size: int = 4096) -> tuple[float, float]:
    """``(RankNet loss over all pairs, accuracy over non-tie pairs)`` in eval mode, each clip scored once."""
    head.eval()
    scores = torch.cat([head(features[i:i + batch_size]) for i in range(0, len(features), batch_size)])
    margins = scores[pairs[:, 0]] - scores[pairs[:, 1]]
    loss = float(F.binary_cross_entropy_with_logits(margins, targets))
    decided = targets != 0.5
    accuracy, _ = pairwise_accuracy(margins[decided].cpu().numpy(), (targets[decided] == 1.0).cpu().numpy())
    return loss, accuracy


def train_head_on_features(features, config: HeadTrainingConfig, *, validation=None,
                           progress: Callable[[dict], None] | None = None) -> HeadTrainingResult:
    """:func:`train_head` on a :class:`~tunejury_align.reward.features.PairFeatures` (and optionally a
    validation ``PairFeatures``), taking the blocks ``config.exclude`` leaves."""
    spec = HeadSpec(tuple(config.exclude))
    features_a, features_b = features.inputs(spec)
    held_out = None
    if validation is not None:
        held_out = (*validation.inputs(spec), validation.target)
    return train_head(features_a, features_b, features.target, config, validation=held_out, progress=progress)


def save_head_checkpoint(head: TuneJuryHead, spec: HeadSpec, path: str | Path, training: dict | None = None) -> Path:
    """Write ``path`` (a plain ``state_dict``, the released layout) and its sidecar ``<path>.json``
    ``{"input_dim", "exclude"}``, atomically; ``training`` (optional) goes to ``<path>.training.json``."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in head.state_dict().items()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_text(path.with_name(path.name + ".json"),
                      json.dumps({"input_dim": spec.input_dim, "exclude": list(spec.exclude)}) + "\n")
    if training is not None:
        atomic_write_text(path.with_name(path.name + ".training.json"), json.dumps(training, indent=1) + "\n")
    return path
