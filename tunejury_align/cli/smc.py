"""``align smc``: particle steering of the diffusion generators (Feynman-Kac steering, Singhal et al., 2025,
arXiv 2501.06848), resumable and shardable (``accelerate launch``)."""

from __future__ import annotations

import argparse

from ..config import describe
from ..generators import family_help
from ..recipes.smc import SMCConfig
from .common import (
    DEBUG_LABEL,
    EXIT_OK,
    add_reward_options,
    add_run_options,
    check_output_dir,
    distributed_state,
    load_models,
    printable,
    read_prompts,
    run_scorers,
    truth_text,
    world_truth,
)
from .progress import Progress, say


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "smc", help="steer K diffusion particles per prompt by intermediate rewards (FK / SMC)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Particle steering: K particles per prompt run the sampler together; every resample_every "
                    "steps their x0 predictions are decoded and scored and the particles are resampled by FK "
                    "potentials. Writes each prompt's chosen sample, the final particles' rewards, the ancestry "
                    "and the compute. Resumable per prompt; under `accelerate launch` the prompts are sharded.",
        epilog="settings: defaults < --config YAML < flags < key=value overrides.\n"
               "config keys (set in --config YAML or as key=value overrides):\n" + describe(SMCConfig))
    add_run_options(parser, generator_help=family_help(lambda family: family.diffusion,
                                                       debug_default="debug-stable-audio"),
                    config_example="recipes/stable-audio/smc.yaml", override_example="temperature=20 potential=max")
    parser.add_argument("--particles", type=int, help="K, particles per prompt (default 8)")
    parser.add_argument("--save-all", action="store_true", help="write every final particle, not only the chosen")
    add_reward_options(parser)
    parser.set_defaults(handler=cmd_smc)


def cmd_smc(args) -> int:
    from ..config import load_config
    from ..generators import as_diffusion_generator
    from ..recipes.smc_run import run_smc
    from ..report import build_report
    from ..rundir import run_meta

    # 1. Everything that can be wrong is checked before any sampling starts.
    prompts = read_prompts(args)
    config = load_config(SMCConfig, args.config, args.overrides, particles=args.particles,
                         save_all=True if args.save_all else None)
    truth = world_truth(args, config.world)
    processes = distributed_state()
    out = check_output_dir(args.out, is_main=processes.is_main)
    say(f"smc: {len(prompts)} prompt(s) x {config.particles} particle(s), potential {config.potential}, lambda "
        f"{config.temperature:g}, scored every {config.resample_every} step(s), generation options "
        f"{config.generation or '(defaults)'} -> {printable(out)}", processes.is_main)
    generator, reward = load_models(args, debug_default="debug-stable-audio", generation=config.generation,
                                    processes=processes, wrap=as_diffusion_generator, truth=truth)
    # 2. Run (resuming whatever the folder already holds).
    meta = run_meta("smc", config, prompts, generator, reward)
    scorers = run_scorers(args, generator, reward, meta, truth)
    shard = len(range(processes.rank, len(prompts), processes.world_size))
    with Progress("smc", shard, "prompts", enabled=processes.is_main) as bar:
        summary = run_smc(generator, reward, prompts, config, out, meta, rank=processes.rank,
                          world_size=processes.world_size, barrier=processes.barrier, progress=bar.update,
                          scorers=scorers)
    # 3. Report.
    if summary is not None:
        label = DEBUG_LABEL if summary["debug"] else ""
        chosen, compute = summary["mean_chosen_reward"], summary["compute"]
        print(f"smc with {config.particles} particles over {len(prompts)} prompt(s){label} -> {printable(out)}")
        print(f"  mean chosen reward {chosen['mean']:.4f}  [{chosen['low']:.3f}, {chosen['high']:.3f}]")
        chosen_truth = summary["extras"].get("truth")
        if chosen_truth:
            print(f"  truth of the chosen {chosen_truth['mean']:.4f}  [{chosen_truth['low']:.3f}, "
                  f"{chosen_truth['high']:.3f}]  ({truth_text(scorers['truth'])}; higher is better)")
        print(f"  compute: {compute['generator_passes']} {compute['pass_unit']}, {compute['reward_calls']} reward "
              f"calls, generator {compute['generator_seconds']:.1f} s, reward {compute['encoder_seconds']:.1f} s")
        if "alarm" in summary:
            from ..recipes.alarm import alarm_line

            print(alarm_line(summary["alarm"]))
        print(f"report: {printable(build_report(out))}")
    return EXIT_OK
