"""``align expert-iter``: expert iteration (reward-filtered self-training) from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import describe
from ..generators import family_help
from ..recipes.expert_iter import ExpertIterConfig
from .common import (
    DEBUG_LABEL,
    EXIT_OK,
    UsageError,
    add_reward_options,
    add_run_options,
    check_output_dir,
    distributed_state,
    load_models,
    printable,
    read_prompts,
    read_prompts_from,
    run_scorers,
    truth_text,
    world_truth,
)
from .progress import Phases, say

FILTER_KEYS = ("threshold", "keep_top", "keep_per_prompt")


def add_parser(commands) -> None:
    """Add the ``expert-iter`` subcommand to ``commands`` (an argparse subparsers object)."""
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
    add_run_options(parser, generator_help=family_help(lambda family: family.trainer is not None,
                                                       debug_default="debug-musicgen"),
                    config_example="recipes/musicgen/expert_iter.yaml",
                    override_example="learning_rate=1e-5 generation.duration=5")
    parser.add_argument("--heldout", metavar="FILE",
                        help="held-out evaluation prompts (default: a seeded heldout_fraction of the prompts)")
    parser.add_argument("--rounds", type=int, help="generate / filter / fine-tune rounds (default 1)")
    parser.add_argument("--samples-per-prompt", type=int, help="samples per prompt per round, K (default 9)")
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument("--threshold", type=float, help="keep samples scoring >= T")
    keep.add_argument("--keep-top", type=float, metavar="F", help="keep the global top fraction F (default 0.1)")
    keep.add_argument("--keep-per-prompt", type=int, metavar="K", help="keep each prompt's top K samples")
    parser.add_argument("--train-steps", type=int, help="optimizer steps per round (default 5000)")
    parser.add_argument("--learning-rate", type=float, help="AdamW learning rate (default 5e-6)")
    parser.add_argument("--train-batch-size", type=int, help="global batch per optimizer step (default 16)")
    add_reward_options(parser)
    parser.set_defaults(handler=cmd_expert_iter)


def cmd_expert_iter(args) -> int:
    import json

    from ..config import load_config
    from ..generators import trainer_for
    from ..recipes.alarm import alarm_line
    from ..recipes.expert_iter import split_prompts
    from ..recipes.expert_iter_run import expert_iter_run_meta, run_expert_iteration
    from ..report import build_report
    from ..rundir import is_debug

    # 1. Everything that can be wrong is checked before any generation starts.
    prompts = read_prompts(args)
    heldout = read_prompts_from(Path(args.heldout)) if args.heldout else None
    chosen = [key for key in FILTER_KEYS if getattr(args, key) is not None]
    resets = [f"{key}=null" for key in FILTER_KEYS if chosen and key not in chosen]  # a flag beats the YAML's filter
    config = load_config(ExpertIterConfig, args.config, resets + list(args.overrides), rounds=args.rounds,
                         samples_per_prompt=args.samples_per_prompt, threshold=args.threshold,
                         keep_top=args.keep_top, keep_per_prompt=args.keep_per_prompt, train_steps=args.train_steps,
                         learning_rate=args.learning_rate, train_batch_size=args.train_batch_size)
    if heldout is None:
        prompts, heldout = split_prompts(prompts, config.heldout_fraction, config.heldout_seed)
    truth = world_truth(args, config.world)
    processes = distributed_state()
    world_size = processes.world_size
    if config.train_batch_size % (config.gradient_accumulation_steps * world_size):
        raise UsageError(f"train_batch_size {config.train_batch_size} must be a multiple of "
                         f"gradient_accumulation_steps x processes ({config.gradient_accumulation_steps} x {world_size})")
    out = check_output_dir(args.out, is_main=processes.is_main)
    say(plan(config, prompts, heldout, args.generator, out), processes.is_main)

    def trainable(generator):  # its family must have a fine-tuning loss, and the patterns must match
        trainer_for(generator, config.trainable, config.generation)
        return generator

    generator, reward = load_models(args, debug_default="debug-musicgen", generation=config.generation,
                                    processes=processes, wrap=trainable, truth=truth)
    accelerator = None
    if world_size > 1:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        accelerator = Accelerator(cpu=args.device == "cpu",
                                  kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
    # 2. Run (resuming whatever the folder already holds).
    meta = expert_iter_run_meta(config, prompts, heldout, generator, reward)
    scorers = run_scorers(args, generator, reward, meta, truth)
    bars = Phases(lambda phase: "steps" if phase.endswith("train") else "samples", enabled=processes.is_main)
    try:
        rows = run_expert_iteration(generator, reward, prompts, config, out, meta, heldout=heldout,
                                    rank=processes.rank, world_size=world_size, barrier=processes.barrier,
                                    accelerator=accelerator, progress=bars, scorers=scorers,
                                    reference=args.reference)
    finally:
        bars.close()
    # 3. Report.
    if rows is not None:
        label = DEBUG_LABEL if is_debug(meta) else ""
        where = "held-out" if heldout else "training"
        print(f"expert iteration: {config.rounds} round(s), {len(prompts)} training prompt(s), "
              f"{len(heldout) or len(prompts)} {where} prompt(s){label} -> {printable(out)}")
        truth = "eval_truth_mean" in rows[0]
        print("  round  eval reward" + ("  eval truth" if truth else "") + "  kept        Frechet (" + ", ".join(
            k[len("frechet_"):] for k in rows[0] if k.startswith("frechet_")) + ")  diversity")
        for row in rows:
            kept = f"{row['kept']} ({row['kept_fraction']:.0%})" if row["kept"] is not None else "-"
            frechet = ", ".join(f"{row[k]:.4g}" for k in row if k.startswith("frechet_")) or "-"
            diversity = f"{row['diversity']:.4f}" if row.get("diversity") is not None else "-"
            truth_cell = f"  {row['eval_truth_mean']:<10.4f}" if truth else ""
            print(f"  {row['round']:<5d}  {row['eval_reward_mean']:<11.4f}{truth_cell}  {kept:<10}  {frechet}  {diversity}")
        if truth:
            print(f"  (eval truth: {truth_text(scorers['truth'])} of fresh held-out samples)")
        print(f"  checkpoints: {printable(out / f'round_{config.rounds}' / 'checkpoint')} (from_pretrained)")
        print(alarm_line(json.loads((out / "summary.json").read_text())["alarm"]))
        print(f"report: {printable(build_report(out))}")
    return EXIT_OK


def plan(config, prompts: list[str], heldout: list[str], generator: str, out: Path) -> str:
    """What the run will do, said before the models load (a long run should never start silently)."""
    chosen = next(key for key in FILTER_KEYS if getattr(config, key) is not None)
    where = "held-out" if heldout else "training"
    text = (f"expert-iter: {config.rounds} round(s), each: {len(prompts)} training prompt(s) x "
            f"{config.samples_per_prompt} samples, filter {chosen}={getattr(config, chosen)}, {config.train_steps} "
            f"training steps (batch {config.train_batch_size}); evaluation of the start and of each round: "
            f"{len(heldout) or len(prompts)} {where} prompt(s) x {config.eval_samples_per_prompt} samples -> {printable(out)}")
    if generator.startswith("debug") and config.train_steps > 100:
        text += (f"\nnote: {config.train_steps} steps per round on the debug models take long and mean nothing; for "
                 "a run of seconds add --config recipes/debug/expert_iter.yaml")
    return text
