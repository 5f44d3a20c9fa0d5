"""``align ditto``: DITTO (Novack et al., 2024, arXiv 2401.12179) from the command line.

Wired into ``align`` by ``tunejury_align.cli`` with ``add_ditto_parser(commands, add_reward_options)``.
Imports from ``tunejury_align.cli`` happen inside the handler (``cli`` imports this module).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

GENERATOR_HELP = ("hub id or local folder (Stable Audio Open, AudioLDM2), 'debug' (= debug-stable-audio), "
                  "debug-stable-audio or debug-audioldm2")


def add_ditto_parser(commands, add_reward_options) -> None:
    """Add the ``ditto`` subcommand to ``commands`` (an argparse subparsers object)."""
    from .config import describe
    from .recipes.ditto import PRESETS, DittoConfig

    parser = commands.add_parser(
        "ditto", help="optimise each prompt's initial noise for reward (DITTO)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="DITTO: freeze the generator, optimise only the initial noise so that the decoded audio "
                    "maximises the reward (Adam through the unrolled sampler, checkpointed per step). Writes the "
                    "baseline and optimised audio per prompt and ditto.jsonl (reward, noise norm, seconds, peak "
                    "memory per iterate). Resumable: rerun the same command to continue.",
        epilog="settings: defaults < --preset < --config YAML < flags < key=value overrides.\n"
               "config keys (set in --config YAML or as key=value overrides):\n" + describe(DittoConfig))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. noise_regularization=0.1 generation.duration=5")
    parser.add_argument("--generator", required=True, help=GENERATOR_HELP)
    prompt_source = parser.add_mutually_exclusive_group(required=True)
    prompt_source.add_argument("--prompts", help="text file, one prompt per line (or JSONL with 'prompt')")
    prompt_source.add_argument("--prompt", nargs="+", help="prompt(s) given inline")
    parser.add_argument("--out", required=True, help="output folder (created; an existing run there is resumed)")
    parser.add_argument("--config", help="YAML config, e.g. recipes/stable-audio/ditto.yaml")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="base values: paper (lr 5e-3, 20 steps, 70 iterations; the default) or fast "
                             "(lr 0.05, 8 steps, 5 iterations)")
    parser.add_argument("--iterations", type=int, help="Adam steps per prompt (overrides the preset)")
    parser.add_argument("--seed", type=int, help="seed of the initial noise (default 42)")
    add_reward_options(parser)
    parser.set_defaults(handler=cmd_ditto)


def cmd_ditto(args) -> int:
    from tqdm.auto import tqdm

    from .cli import (
        EXIT_OK,
        EXIT_SOME_FAILED,
        UsageError,
        check_generation_options,
        load_reward,
        read_prompts,
        resolve_device,
        reward_info,
        split_overrides_from_prompts,
    )
    from .config import load_config
    from .generators import load_generator
    from .recipes.ditto import DittoConfig, DittoOutOfMemoryError, as_diffusion_generator
    from .recipes.ditto_run import run_ditto, run_meta

    # 1. Everything that can be wrong is checked before any optimisation starts.
    split_overrides_from_prompts(args)
    prompts = read_prompts(args)
    config = load_config(DittoConfig, args.config, args.overrides, preset=args.preset,
                         iterations=args.iterations, seed=args.seed)
    device = resolve_device(args.device, None)
    args.device = device
    generator = load_generator(args.generator, debug_default="debug-stable-audio", device=device)
    try:
        generator = as_diffusion_generator(generator)
    except TypeError as err:
        raise UsageError(str(err)) from err
    check_generation_options(generator, config.generation_options())
    reward = load_reward(args)
    # 2. Run (resuming whatever the folder already holds).
    meta = run_meta(config, prompts, generator, reward_info(reward))
    with tqdm(total=len(prompts) * (config.iterations + 1), desc="ditto", unit="iter", disable=None,
              file=sys.stderr) as bar:
        try:
            summary = run_ditto(generator, reward, prompts, config, Path(args.out), meta, progress=bar.update)
        except DittoOutOfMemoryError as err:
            bar.close()
            print(f"error: {err} The prompts finished so far stay in {args.out}; checkpoint_steps and "
                  "checkpoint_reward can change on a resume (same --out), other settings need a new --out.",
                  file=sys.stderr)
            return EXIT_SOME_FAILED
    # 3. Report.
    label = " (debug models: the rewards mean nothing)" if summary["debug"] else ""
    print(f"DITTO ({config.preset} preset: lr {config.learning_rate:g}, {config.sampler_steps} sampler steps, "
          f"{config.iterations} iterations) over {len(prompts)} prompt(s){label} -> {args.out}")
    for row in summary["per_prompt"]:
        print(f"  p{row['prompt_index']:04d}  reward {row['baseline_reward']:.4f} -> {row['optimised_reward']:.4f} "
              f"({row['gain']:+.4f}, best iterate {row['best_iteration']})  {row['prompt'][:60]}")
    if summary["finished"]:
        print(f"  mean gain {summary['mean_gain']:+.4f}")
    from .report import build_report

    print(f"report: {build_report(args.out)}")
    return EXIT_OK
