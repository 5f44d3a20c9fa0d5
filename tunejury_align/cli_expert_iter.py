"""``align expert-iter``: expert iteration (reward-filtered self-training) from the command line.

Wired into ``align`` by ``tunejury_align.cli`` with ``add_expert_iter_parser(commands, add_reward_options)``.
Imports from ``tunejury_align.cli`` happen inside the handler (``cli`` imports this module).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

GENERATOR_HELP = ("hub id or local folder (MusicGen, Stable Audio Open), 'debug' (= debug-musicgen), "
                  "debug-musicgen or debug-stable-audio")
FILTER_KEYS = ("threshold", "keep_top", "keep_per_prompt")


def add_expert_iter_parser(commands, add_reward_options) -> None:
    """Add the ``expert-iter`` subcommand to ``commands`` (an argparse subparsers object)."""
    from .config import describe
    from .recipes.expert_iter import ExpertIterConfig

    parser = commands.add_parser(
        "expert-iter", help="fine-tune a generator on its own best samples (expert iteration)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Expert iteration: each round generates K samples per prompt, scores them with the frozen "
                    "reward, keeps those that pass the filter and fine-tunes the generator on them with its own "
                    "training loss (MusicGen: token cross-entropy on EnCodec codes; Stable Audio: v-diffusion loss "
                    "on VAE latents). Every round is checkpointed with save_pretrained under OUT/round_<r>/checkpoint "
                    "and evaluated on held-out prompts (reward, Frechet distance to round 0, diversity) in "
                    "OUT/metrics.jsonl. Resumable: rerun the same command. Under `accelerate launch` generation is "
                    "sharded by prompt and training runs with DDP.",
        epilog="settings: defaults < --config YAML < flags < key=value overrides.\n"
               "config keys (set in --config YAML or as key=value overrides):\n" + describe(ExpertIterConfig))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. learning_rate=1e-5 generation.duration=5")
    parser.add_argument("--generator", required=True, help=GENERATOR_HELP)
    prompt_source = parser.add_mutually_exclusive_group(required=True)
    prompt_source.add_argument("--prompts", help="text file, one prompt per line (or JSONL with 'prompt')")
    prompt_source.add_argument("--prompt", nargs="+", help="prompt(s) given inline")
    parser.add_argument("--heldout", metavar="FILE",
                        help="held-out evaluation prompts (default: a seeded heldout_fraction of the prompts)")
    parser.add_argument("--out", required=True, help="output folder (created; an existing run there is resumed)")
    parser.add_argument("--config", help="YAML config, e.g. recipes/musicgen/expert_iter.yaml")
    parser.add_argument("--rounds", type=int, help="generate / filter / fine-tune rounds (default 1)")
    parser.add_argument("--samples-per-prompt", type=int, help="samples per prompt per round, K (default 9)")
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument("--threshold", type=float, help="keep samples scoring >= T")
    keep.add_argument("--keep-top", type=float, metavar="F", help="keep the global top fraction F (default 0.1)")
    keep.add_argument("--keep-per-prompt", type=int, metavar="K", help="keep each prompt's top K samples")
    parser.add_argument("--train-steps", type=int, help="optimizer steps per round (default 5000)")
    parser.add_argument("--learning-rate", type=float, help="AdamW learning rate (default 5e-6)")
    parser.add_argument("--batch-size", type=int, help="global batch per optimizer step (default 16)")
    add_reward_options(parser)
    parser.set_defaults(handler=cmd_expert_iter)


class ProgressBars:
    """One tqdm bar per phase (``round 1: generate`` ...), on stderr, on the main process only."""

    def __init__(self, enabled: bool):
        self.enabled, self.bars = enabled, {}

    def __call__(self, phase: str, advance: int, total: int) -> None:
        from tqdm.auto import tqdm

        if phase not in self.bars:
            self.bars[phase] = tqdm(total=total, desc=phase, disable=None if self.enabled else True, file=sys.stderr,
                                    leave=False)
        bar = self.bars[phase]
        bar.update(advance)
        if bar.n >= total:
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def cmd_expert_iter(args) -> int:
    from .cli import (
        EXIT_OK,
        UsageError,
        check_generation_options,
        distributed_state,
        load_reward,
        read_prompts,
        resolve_device,
        reward_info,
        split_overrides_from_prompts,
    )
    from .config import load_config
    from .generators import load_generator
    from .recipes.expert_iter import ExpertIterConfig, split_prompts
    from .recipes.expert_iter_run import run_expert_iteration, run_meta
    from .recipes.finetune import trainer_for

    # 1. Everything that can be wrong is checked before any generation starts.
    split_overrides_from_prompts(args)
    prompts = read_prompts(args)
    heldout = read_prompts(argparse.Namespace(prompt=None, prompts=args.heldout)) if args.heldout else None
    chosen = [key for key in FILTER_KEYS if getattr(args, key) is not None]
    resets = [f"{key}=null" for key in FILTER_KEYS if chosen and key not in chosen]  # a flag beats the YAML's filter
    config = load_config(ExpertIterConfig, args.config, resets + list(args.overrides), rounds=args.rounds,
                         samples_per_prompt=args.samples_per_prompt, threshold=args.threshold,
                         keep_top=args.keep_top, keep_per_prompt=args.keep_per_prompt, train_steps=args.train_steps,
                         learning_rate=args.learning_rate, batch_size=args.batch_size)
    if heldout is None:
        prompts, heldout = split_prompts(prompts, config.heldout_fraction, config.heldout_seed)
    rank, world_size, barrier, dist_device = distributed_state()
    if config.batch_size % (config.gradient_accumulation_steps * world_size):
        raise UsageError(f"batch_size {config.batch_size} must be a multiple of gradient_accumulation_steps x "
                         f"processes ({config.gradient_accumulation_steps} x {world_size})")
    device = resolve_device(args.device, dist_device)
    args.device = device
    generator = load_generator(args.generator, debug_default="debug-musicgen", device=device)
    check_generation_options(generator, config.generation)
    try:
        trainer_for(generator, config.trainable, config.generation)
    except (TypeError, ValueError, NotImplementedError) as err:
        raise UsageError(str(err)) from err
    reward = load_reward(args)
    accelerator = None
    if world_size > 1:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        accelerator = Accelerator(cpu=device == "cpu",
                                  kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
    # 2. Run (resuming whatever the folder already holds).
    meta = run_meta(config, prompts, heldout, generator, reward_info(reward))
    bars = ProgressBars(enabled=rank == 0)
    try:
        rows = run_expert_iteration(generator, reward, prompts, config, Path(args.out), meta, heldout=heldout,
                                    rank=rank, world_size=world_size, barrier=barrier, accelerator=accelerator,
                                    progress=bars)
    finally:
        bars.close()
    # 3. Report.
    if rows is not None:
        debug = meta["generator"].get("debug") or meta["reward"].get("debug")
        label = " (debug models: the numbers mean nothing)" if debug else ""
        where = "held-out" if heldout else "training"
        print(f"expert iteration: {config.rounds} round(s), {len(prompts)} training prompt(s), "
              f"{len(heldout) or len(prompts)} {where} prompt(s){label} -> {args.out}")
        print("  round  eval reward  kept        Frechet (" + ", ".join(
            k[len("frechet_"):] for k in rows[0] if k.startswith("frechet_")) + ")  diversity")
        for row in rows:
            kept = f"{row['kept']} ({row['kept_fraction']:.0%})" if row["kept"] is not None else "-"
            frechet = ", ".join(f"{row[k]:.4g}" for k in row if k.startswith("frechet_")) or "-"
            diversity = f"{row['diversity']:.4f}" if row.get("diversity") is not None else "-"
            print(f"  {row['round']:<5d}  {row['eval_reward_mean']:<11.4f}  {kept:<10}  {frechet}  {diversity}")
        print(f"  checkpoints: {Path(args.out) / f'round_{config.rounds}' / 'checkpoint'} (from_pretrained)")
        from .report import build_report

        print(f"report: {build_report(args.out)}")
    return EXIT_OK
