"""``align ditto``: DITTO (Novack et al., 2024, arXiv 2401.12179) from the command line."""

from __future__ import annotations

import argparse
import sys

from ..config import describe
from ..generators import family_help
from ..recipes.ditto import PRESETS, DittoConfig
from .common import (
    DEBUG_LABEL,
    EXIT_OK,
    EXIT_SOME_FAILED,
    add_reward_options,
    add_run_options,
    check_output_dir,
    load_models,
    printable,
    read_prompts,
    run_scorers,
    truth_text,
    world_truth,
)
from .progress import Progress, say


def add_parser(commands) -> None:
    """Add the ``ditto`` subcommand to ``commands`` (an argparse subparsers object)."""
    parser = commands.add_parser(
        "ditto", help="optimise each prompt's initial noise for reward (DITTO)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="DITTO: freeze the generator, optimise only the initial noise so that the decoded audio "
                    "maximises the reward (Adam through the unrolled sampler, checkpointed per step). Writes the "
                    "baseline and optimised audio per prompt and ditto.jsonl (reward, noise norm, seconds, peak "
                    "memory per iterate). Resumable: rerun the same command to continue.",
        epilog="settings: defaults < --preset < --config YAML < flags < key=value overrides.\n"
               "config keys (set in --config YAML or as key=value overrides):\n" + describe(DittoConfig))
    add_run_options(parser, generator_help=family_help(lambda family: family.diffusion,
                                                       debug_default="debug-stable-audio"),
                    config_example="recipes/stable-audio/ditto.yaml",
                    override_example="noise_regularization=0.1 generation.duration=5")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="base values: paper (lr 5e-3, 20 steps, 70 iterations; the default) or fast "
                             "(lr 0.05, 8 steps, 5 iterations)")
    parser.add_argument("--iterations", type=int, help="Adam steps per prompt (overrides the preset)")
    parser.add_argument("--seed", type=int, help="seed of the initial noise (default 42)")
    add_reward_options(parser)
    parser.set_defaults(handler=cmd_ditto)


def cmd_ditto(args) -> int:
    from ..config import load_config
    from ..generators import as_diffusion_generator
    from ..recipes.alarm import alarm_line
    from ..recipes.ditto import DittoOutOfMemoryError
    from ..recipes.ditto_run import ditto_run_meta, run_ditto
    from ..report import build_report

    # 1. Everything that can be wrong is checked before any optimisation starts.
    prompts = read_prompts(args)
    config = load_config(DittoConfig, args.config, args.overrides, preset=args.preset,
                         iterations=args.iterations, seed=args.seed)
    truth = world_truth(args, config.world)
    out = check_output_dir(args.out)
    say(f"ditto: {len(prompts)} prompt(s) x {config.iterations + 1} iterates (baseline + {config.iterations} "
        f"iterations), {config.sampler_steps} sampler steps each, preset {config.preset} (lr {config.learning_rate:g}) "
        f"-> {printable(out)}")
    generator, reward = load_models(args, debug_default="debug-stable-audio", generation=config.generation_options(),
                                    wrap=as_diffusion_generator, truth=truth)
    # 2. Run (resuming whatever the folder already holds).
    meta = ditto_run_meta(config, prompts, generator, reward)
    scorers = run_scorers(args, generator, reward, meta, truth)
    with Progress("ditto", len(prompts) * (config.iterations + 1), "iterates") as bar:
        try:
            summary = run_ditto(generator, reward, prompts, config, out, meta, progress=bar.update,
                                scorers=scorers, reference=args.reference)
        except DittoOutOfMemoryError as err:
            bar.close()
            print(f"error: {err} The prompts finished so far stay in {printable(out)}; checkpoint_steps and "
                  "checkpoint_reward can change on a resume (same --out), other settings need a new --out.",
                  file=sys.stderr)
            return EXIT_SOME_FAILED
    # 3. Report.
    label = DEBUG_LABEL if summary["debug"] else ""
    print(f"DITTO ({config.preset} preset: lr {config.learning_rate:g}, {config.sampler_steps} sampler steps, "
          f"{config.iterations} iterations) over {len(prompts)} prompt(s){label} -> {printable(out)}")
    for row in summary["per_prompt"]:
        truth = (f"   truth {row['baseline_truth']:.4f} -> {row['optimised_truth']:.4f} "
                 f"({row['optimised_truth'] - row['baseline_truth']:+.4f})") if "baseline_truth" in row else ""
        print(f"  p{row['prompt_index']:04d}  reward {row['baseline_reward']:.4f} -> {row['optimised_reward']:.4f} "
              f"({row['gain']:+.4f}, best iterate {row['best_iteration']}){truth}  {printable(row['prompt'][:60])}")
    if summary["finished"]:
        gained = f", truth {summary['mean_truth_gain']:+.4f}" if "mean_truth_gain" in summary else ""
        print(f"  mean gain: reward {summary['mean_gain']:+.4f}{gained}")
        if gained:
            print(f"  (truth: {truth_text(scorers['truth'])}; higher is better)")
    if "alarm" in summary:
        print(alarm_line(summary["alarm"]))
    print(f"report: {printable(build_report(out))}")
    return EXIT_OK
