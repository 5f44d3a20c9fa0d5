"""``align best-of-n``: best-of-N reranking, resumable and shardable (``accelerate launch``)."""

from __future__ import annotations

import argparse

from ..config import describe
from ..generators import family_help
from ..recipes.best_of_n import BestOfNConfig
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
    run_scorers,
    truth_text,
    world_truth,
)
from .progress import Progress, say


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "best-of-n", help="generate N candidates per prompt, keep the best by reward",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Best-of-N reranking. Resumable: rerun the same command to continue an interrupted run. "
                    "Under `accelerate launch` the prompts are sharded across processes.",
        epilog="settings: defaults < --config YAML < flags < key=value overrides.\n"
               "config keys (set in --config YAML or as key=value overrides):\n" + describe(BestOfNConfig))
    add_run_options(parser, generator_help=family_help(debug_default="debug-musicgen"),
                    config_example="recipes/musicgen/best_of_n.yaml", override_example="generation.duration=5")
    parser.add_argument("--n", type=int, help="candidates per prompt (default 32)")
    parser.add_argument("--save-all", action="store_true", help="write every candidate's audio, not only winners")
    parser.add_argument("--prune", action="store_true",
                        help="MusicGen: early pruning (score prefixes at prune_at, keep prune_keep of the streams)")
    parser.add_argument("--select", choices=("reward", "judges-mean", "lcb"),
                        help="keep the candidate with the best reward (default), judges' mean, or lower confidence "
                             "bound over reward and judges (lcb_k=...); the last two need --judges")
    add_reward_options(parser)
    parser.set_defaults(handler=cmd_best_of_n)


def cmd_best_of_n(args) -> int:
    from ..config import load_config
    from ..recipes.alarm import alarm_line
    from ..recipes.best_of_n_run import run_best_of_n
    from ..report import build_report
    from ..rundir import run_meta

    # 1. Everything that can be wrong is checked before any generation starts.
    prompts = read_prompts(args)
    config = load_config(BestOfNConfig, args.config, args.overrides, n=args.n,
                         save_all=True if args.save_all else None, prune=True if args.prune else None,
                         select=args.select)
    truth = world_truth(args, config.world)
    processes = distributed_state()
    out = check_output_dir(args.out, is_main=processes.is_main)
    say(f"best-of-n: {len(prompts)} prompt(s) x {config.n} candidate(s) = {len(prompts) * config.n} generations "
        f"in units of {config.candidates_per_batch}, generation options {config.generation or '(defaults)'} "
        f"-> {printable(out)}", processes.is_main)
    generator, reward = load_models(args, debug_default="debug-musicgen", generation=config.generation,
                                    processes=processes, truth=truth)
    # 2. Run (resuming whatever the folder already holds).
    meta = run_meta("best-of-n", config, prompts, generator, reward)
    scorers = run_scorers(args, generator, reward, meta, truth)
    if config.select != "reward" and "judges" not in meta:
        raise UsageError(f"select={config.select} ranks by held-out judges: give them with --judges (e.g. --judges "
                         "debug with the debug reward)")
    if config.prune:
        return run_pruned(generator, reward, prompts, config, out, meta, processes, scorers)
    shard = len(range(processes.rank, len(prompts), processes.world_size)) * config.n
    with Progress("best-of-n", shard, "candidates", enabled=processes.is_main) as bar:
        summary = run_best_of_n(generator, reward, prompts, config, out, meta, rank=processes.rank,
                                world_size=processes.world_size, barrier=processes.barrier, progress=bar.update,
                                scorers=scorers, reference=args.reference)
    # 3. Report.
    if summary is not None:
        report = build_report(out)
        label = DEBUG_LABEL if summary["debug"] else ""
        print(f"best-of-{config.n} over {len(prompts)} prompt(s){label} -> {printable(out)}")
        truths = (summary.get("extra_curves") or {}).get("truth")
        for index, point in enumerate(summary["curve"]):
            line = f"  N={point['n']:<3d} mean best reward {point['mean']:.4f}{interval_text(point)}"
            if truths:
                line += f"   truth of the reward's pick {truths[index]['mean']:.4f}{interval_text(truths[index])}"
            print(line)
        if truths:
            print(f"  (truth: {truth_text(scorers['truth'])}; higher is better)")
        if "alarm" in summary:
            print(alarm_line(summary["alarm"]))
        print(f"report: {printable(report)}")
    return EXIT_OK


def interval_text(point: dict) -> str:
    return f"  [{point['low']:.3f}, {point['high']:.3f}]" if "low" in point else ""


def run_pruned(generator, reward, prompts, config, out, meta, processes, scorers) -> int:
    from ..recipes.best_of_n_prune import check_prunable
    from ..recipes.best_of_n_prune_run import run_pruned_best_of_n
    from ..report import build_report

    try:
        check_prunable(generator)
    except ValueError as err:
        raise UsageError(str(err)) from err
    shard = len(range(processes.rank, len(prompts), processes.world_size))
    with Progress("best-of-n --prune", shard, "prompts", enabled=processes.is_main) as bar:
        summary = run_pruned_best_of_n(generator, reward, prompts, config, out, meta, rank=processes.rank,
                                       world_size=processes.world_size, barrier=processes.barrier,
                                       progress=bar.update, scorers=scorers)
    if summary is not None:
        label = DEBUG_LABEL if summary["debug"] else ""
        winner, compute = summary["mean_winner_score"], summary["compute"]
        print(f"pruned best-of-{config.n} over {len(prompts)} prompt(s){label} -> {printable(out)}")
        print(f"  mean winner reward {winner['mean']:.4f}  [{winner['low']:.3f}, {winner['high']:.3f}]")
        if "truth" in summary["extras"]:
            print(f"  truth of the winner {summary['extras']['truth']['mean']:.4f} ({truth_text(scorers['truth'])})")
        print(f"  compute: {compute['generator_passes']} {compute['pass_unit']} = {summary['compute_ratio']:.2f} x the "
              f"unpruned run's {summary['unpruned_passes']}, {compute['reward_calls']} reward calls")
        if "alarm" in summary:
            from ..recipes.alarm import alarm_line

            print(alarm_line(summary["alarm"]))
        print(f"report: {printable(build_report(out))}")
    return EXIT_OK
