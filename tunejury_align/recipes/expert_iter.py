"""Expert iteration: reward-filtered self-training (ReST, Gulcehre et al., 2023, arXiv 2308.08998;
RAFT, Dong et al., 2023, arXiv 2304.06767), as in TuneJury's expert-iteration protocol.

Each round: generate ``samples_per_prompt`` seeded samples per prompt with the current weights (the
best-of-N machinery), score them with the frozen reward, keep the samples that pass the filter,
fine-tune the generator on them with its ordinary training loss (:mod:`.finetune`), and start the
next round from the result. The training loop is :mod:`.finetune`; :mod:`.expert_iter_run` runs the
rounds in a resumable folder and holds the one-call API :func:`~.expert_iter_run.expert_iteration`.

The library default adds no prompt prefix; the shipped YAML recipes set the published one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..debug.worlds import WORLD_HELP, world_settings
from .best_of_n import REWARD_PROMPT_MODES

LR_SCHEDULERS = ("constant", "linear", "cosine")


@dataclass
class ExpertIterConfig:
    """Expert-iteration settings (defaults: TuneJury's protocol, 9 samples per prompt, global top 10 %,
    AdamW, batch 16, EMA 0.999; it reports lr 1e-6 / 5e-6 / 1e-5 with 5K steps)."""

    rounds: int = field(default=1, metadata={"help": "generate / filter / fine-tune rounds"})
    samples_per_prompt: int = field(default=9, metadata={"help": "samples per training prompt per round (K)"})
    base_seed: int = field(default=42, metadata={"help": "round r (1-based) sample c uses seed base_seed + (r-1) K + c"})
    prompt_prefix: str = field(default="", metadata={
        "help": "prepended to each prompt for generation and training (the published recipes use 'high quality "
                "instrumental music, ')"})
    reward_prompt: str = field(default="prompt", metadata={
        "help": "text the reward sees: 'prompt', 'generation' (with the prefix) or 'empty'"})
    candidates_per_batch: int = field(default=8, metadata={
        "help": "samples of one prompt generated and scored together (the unit of resume)"})
    generation: dict = field(default_factory=dict, metadata={
        "help": "generator options (e.g. duration, top_k, temperature, guidance_scale, steps)"})
    world: dict = field(default_factory=dict, metadata={"help": WORLD_HELP})
    threshold: float | None = field(default=None, metadata={"help": "filter: keep samples scoring >= threshold"})
    keep_top: float | None = field(default=None, metadata={
        "help": "filter: keep the global top fraction of the round's samples (0.1 if no filter is set)"})
    keep_per_prompt: int | None = field(default=None, metadata={"help": "filter: keep each prompt's top k samples"})
    train_steps: int = field(default=5000, metadata={"help": "optimizer steps per round"})
    train_batch_size: int = field(default=16, metadata={"help": "global batch per optimizer step (all processes)"})
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
        self.world = world_settings(self.world)
        filters = [name for name in ("threshold", "keep_top", "keep_per_prompt") if getattr(self, name) is not None]
        if not filters:
            self.keep_top = 0.1
        elif len(filters) > 1:
            raise ValueError(f"set one filter, got {filters}")
        positive = ("rounds", "samples_per_prompt", "candidates_per_batch", "train_steps", "train_batch_size",
                    "gradient_accumulation_steps", "save_every", "eval_samples_per_prompt")
        bad = [name for name in positive if int(getattr(self, name)) < 1]
        if bad:
            raise ValueError(f"{bad} must be >= 1")
        if self.keep_top is not None and not 0 < self.keep_top <= 1:
            raise ValueError(f"keep_top must be in (0, 1], got {self.keep_top}")
        if self.keep_per_prompt is not None and not 1 <= self.keep_per_prompt <= self.samples_per_prompt:
            raise ValueError(f"keep_per_prompt must be in [1, samples_per_prompt], got {self.keep_per_prompt}")
        if self.train_batch_size % self.gradient_accumulation_steps:
            raise ValueError("train_batch_size must be a multiple of gradient_accumulation_steps")
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
