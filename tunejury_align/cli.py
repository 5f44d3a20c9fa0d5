"""``align``: the command line. A thin layer over the library; the only place that prints."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import warnings
from pathlib import Path

from . import __version__

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus"}
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
DEBUG_NOTE = "debug reward: tiny random weights, the scores mean nothing"


class UsageError(Exception):
    """Bad arguments or inputs found before any work starts (exit code 2)."""


# -- shared options ------------------------------------------------------------------------------
def add_reward_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reward")
    group.add_argument("--reward", default="TuneJury/tunejury",
                       help="head checkpoint: hub id (owner/repo or owner/repo/FILE.pt), local .pt file or "
                            "folder, or 'debug' for the tiny offline model (default: %(default)s)")
    group.add_argument("--clap", default="lukewys/laion_clap",
                       help="LAION-CLAP music checkpoint: hub id or local file (default: %(default)s)")
    group.add_argument("--mert", default="m-a-p/MERT-v1-330M", help="MERT: hub id or local folder (default: %(default)s)")
    group.add_argument("--text-model", default="roberta-base",
                       help="RoBERTa config + tokenizer for CLAP's text tower (default: %(default)s)")
    group.add_argument("--protocol", choices=("release", "train"), default="release",
                       help="'release': as the published scores (default); 'train': as the training features")
    group.add_argument("--device", default="auto",
                       help="torch device: cpu, cuda, cuda:1, or auto (CUDA when available; default: %(default)s)")
    group.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                       help="encoder compute dtype (the head stays float32; default: %(default)s)")


def load_reward(args):
    import torch

    from .reward import TuneJuryReward

    dtype = getattr(torch, args.dtype)
    device = resolve_device(args.device, None)
    return TuneJuryReward.from_pretrained(args.reward, clap=args.clap, mert=args.mert, text_model=args.text_model,
                                          protocol=args.protocol, device=device,
                                          dtype=None if dtype == torch.float32 else dtype)


# -- align score ---------------------------------------------------------------------------------
def collect_audio_files(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise UsageError(f"{path}: folder holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
            files.extend(found)
        else:
            files.append(path)  # a missing/unreadable file is a per-file error, reported with the rest
    return files


def read_prompts_file(path: Path) -> dict[str, str]:
    """``file -> prompt`` from a CSV (columns ``file,prompt``) or JSONL (``{"file": .., "prompt": ..}``)."""
    if not path.is_file():
        raise UsageError(f"prompts file {path} not found")
    rows: list[dict] = []
    try:
        if path.suffix.lower() in {".jsonl", ".json"}:
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise UsageError(f"{path}:{number}: expected a JSON object with 'file' and 'prompt'")
                    rows.append(row)
        else:
            with path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: invalid JSON line ({err})") from err
    mapping = {}
    for number, row in enumerate(rows, 1):
        if "file" not in row or "prompt" not in row:
            raise UsageError(f"{path}: row {number} needs 'file' and 'prompt' fields, got {sorted(row)}")
        mapping[str(row["file"])] = "" if row["prompt"] is None else str(row["prompt"])
    return mapping


def prompt_for(file: Path, mapping: dict[str, str]) -> str | None:
    for key in (str(file), file.name, str(file.resolve())):
        if key in mapping:
            return mapping[key]
    return None


def cmd_score(args) -> int:
    from tqdm.auto import tqdm

    from .reward.audio import AudioError
    from .reward.percentiles import collection_names, percentiles

    files = collect_audio_files(args.inputs)
    if args.prompts_file:
        mapping = read_prompts_file(Path(args.prompts_file))
        prompts = [prompt_for(f, mapping) for f in files]
        missing = [str(f) for f, p in zip(files, prompts) if p is None]
        if missing:
            raise UsageError(f"{args.prompts_file} has no prompt for {missing[:5]} "
                             "(list every file; use an empty prompt for none)")
    else:
        prompts = [args.prompt or ""] * len(files)
    calibration = None
    if args.calibration or args.system:
        calibration = load_calibration_offset(args)
    reward = load_reward(args)
    names = collection_names()
    results = []
    for file, prompt in tqdm(list(zip(files, prompts)), desc="scoring", unit="file", disable=None, file=sys.stderr):
        record: dict = {"file": str(file), "prompt": prompt}
        try:
            score = reward.score_files([file], [prompt])[0]
            record["score"] = score
            if calibration is not None:
                record["calibrated_score"] = score - calibration
            record["percentiles"] = percentiles(score)
        except AudioError as err:
            record["error"] = str(err)
        record["reward"] = "debug" if reward.is_debug else args.reward
        if reward.is_debug:
            record["debug"] = True
        results.append(record)
    failed = [r for r in results if "error" in r]
    if args.json:
        for record in results:
            print(json.dumps(record))
    else:
        print_score_table(results, names, reward.is_debug)
    for record in failed:
        print(f"error: {record['error']}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(results)} file(s) could not be scored", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def load_calibration_offset(args) -> float:
    if not (args.calibration and args.system):
        raise UsageError("--calibration and --system go together")
    path = Path(args.calibration)
    if not path.is_file():
        raise UsageError(f"calibration file {path} not found")
    biases = json.loads(path.read_text()).get("biases", {})
    if args.system not in biases:
        raise UsageError(f"system '{args.system}' is not in {path} (known: {sorted(biases)})")
    return float(biases[args.system])


def print_score_table(results: list[dict], names: dict[str, str], debug: bool) -> None:
    if debug:
        print(f"# {DEBUG_NOTE}")
    header = ["file", "score"] + [f"%{names[k]}" for k in names]
    rows = []
    for record in results:
        if "error" in record:
            rows.append([record["file"], "ERROR"] + [""] * len(names))
        else:
            score = f"{record['score']:.4f}" + (" (debug)" if debug else "")
            rows.append([record["file"], score] + [f"{record['percentiles'][k]:.1f}" for k in names])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)] if rows else [len(h) for h in header]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    if rows:
        print("# %<collection>: percentile among the published scores of that collection "
              "(empty prompt, release protocol)")


# -- align best-of-n ----------------------------------------------------------------------------
def read_prompts(args) -> list[str]:
    """Prompts from --prompt (repeatable) or --prompts FILE (one per line, or JSONL with "prompt")."""
    if args.prompt:
        prompts = list(args.prompt)
    elif args.prompts:
        path = Path(args.prompts)
        if not path.is_file():
            raise UsageError(f"prompts file {path} not found")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise UsageError(f"prompts file {path} is not UTF-8 text ({err})") from err
        prompts = []
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if path.suffix.lower() == ".jsonl":
                try:
                    record = json.loads(line)
                    prompts.append(str(record["prompt"]))
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise UsageError(f"{path}:{number}: expected a JSON object with a 'prompt' ({err})") from err
            else:
                prompts.append(line.strip())
        if not prompts:
            raise UsageError(f"prompts file {path} holds no prompts (one per line; '#' starts a comment)")
    else:
        raise UsageError("give prompts with --prompts FILE or --prompt TEXT")
    return prompts


OVERRIDE_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*=\S*"


def split_overrides_from_prompts(args) -> None:
    """``--prompt a b n=8`` : argparse gives ``n=8`` to --prompt; a token shaped ``key=value`` with no
    spaces is a config override, not a prompt."""
    import re

    if not args.prompt:
        return
    prompts = [p for p in args.prompt if not re.fullmatch(OVERRIDE_PATTERN, p)]
    args.overrides = list(args.overrides) + [p for p in args.prompt if re.fullmatch(OVERRIDE_PATTERN, p)]
    args.prompt = prompts
    if not prompts:
        raise UsageError("--prompt got only key=value overrides; give at least one prompt")


def distributed_state():
    """(rank, world_size, barrier, device) under `accelerate launch` / torchrun; (0, 1, no-op, None) else."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, (lambda: None), None
    import torch
    from accelerate import PartialState

    on_cpu = not torch.cuda.is_available()
    state = PartialState(cpu=on_cpu)  # without cpu=True, CPU-only processes do not join the gloo group
    return state.process_index, state.num_processes, state.wait_for_everyone, "cpu" if on_cpu else state.device


def resolve_device(requested: str, distributed_device) -> str:
    import torch

    if requested != "auto":
        return requested
    if distributed_device is not None:
        return str(distributed_device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_generation_options(generator, options: dict) -> None:
    """Build the generator's options object now, so a bad key fails before any generation."""
    build = getattr(generator, "options", None)
    if build is None:
        return
    try:
        build(**options)
    except TypeError as err:
        import dataclasses

        valid = sorted(f.name for f in dataclasses.fields(generator.options_class))
        raise UsageError(f"bad generation option for {generator.name}: {err}; valid: {valid}") from err
    except ValueError as err:
        raise UsageError(f"bad generation option for {generator.name}: {err}") from err


def cmd_best_of_n(args) -> int:
    from tqdm.auto import tqdm

    from .config import load_config
    from .generators import load_generator
    from .recipes.best_of_n import BestOfNConfig
    from .recipes.best_of_n_run import run_best_of_n, run_meta

    # 1. Everything that can be wrong is checked before any generation starts.
    split_overrides_from_prompts(args)
    prompts = read_prompts(args)
    config = load_config(BestOfNConfig, args.config, args.overrides, n=args.n,
                         save_all=True if args.save_all else None)
    rank, world_size, barrier, dist_device = distributed_state()
    device = resolve_device(args.device, dist_device)
    args.device = device
    generator = load_generator(args.generator, debug_default="debug-musicgen", device=device)
    check_generation_options(generator, config.generation)
    reward = load_reward(args)
    # 2. Run (resuming whatever the folder already holds).
    meta = run_meta("best-of-n", config, prompts, generator, reward_info(reward))
    shard = len(range(rank, len(prompts), world_size)) * config.n
    with tqdm(total=shard, desc="best-of-n", unit="cand", disable=None if rank == 0 else True,
              file=sys.stderr) as bar:
        summary = run_best_of_n(generator, reward, prompts, config, Path(args.out), meta, rank=rank,
                                world_size=world_size, barrier=barrier, progress=bar.update)
    if summary is not None:
        from .report import build_report

        report = build_report(args.out)
        label = " (debug models: the scores mean nothing)" if summary["debug"] else ""
        print(f"best-of-{config.n} over {len(prompts)} prompt(s){label} -> {args.out}")
        for point in summary["curve"]:
            interval = f"  [{point['low']:.3f}, {point['high']:.3f}]" if "low" in point else ""
            print(f"  N={point['n']:<3d} mean best reward {point['mean']:.4f}{interval}")
        print(f"report: {report}")
    return EXIT_OK


def cmd_report(args) -> int:
    from .report import ReportError, build_report

    try:
        print(build_report(args.run_dir))
    except ReportError as err:
        raise UsageError(str(err)) from err
    return EXIT_OK


def reward_info(reward) -> dict:
    info = getattr(reward, "info", None)
    if info is not None and hasattr(info, "as_dict"):
        return info.as_dict()
    return {"reward": getattr(reward, "__name__", type(reward).__name__), "debug": False}


# -- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="align", description="Align text-to-music generators with the "
                                     "TuneJury reward: score, best-of-N, DITTO, expert iteration.")
    parser.add_argument("--version", action="version", version=f"tunejury-align {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    score = commands.add_parser("score", help="score audio files with the reward",
                                description="Score audio files; prints each score and its percentile in "
                                            "the seven published collections.")
    score.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="audio files or folders (searched recursively)")
    prompt = score.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="one prompt for every file (default: none, the empty-prompt protocol)")
    prompt.add_argument("--prompts-file", help="CSV (file,prompt) or JSONL ({'file','prompt'}) with a prompt per file")
    score.add_argument("--json", action="store_true", help="print one JSON object per file (JSONL)")
    score.add_argument("--calibration", help="calibration JSON from `align calibrate`")
    score.add_argument("--system", help="the generator system whose calibration bias to subtract")
    add_reward_options(score)
    score.set_defaults(handler=cmd_score)

    from .config import describe
    from .recipes.best_of_n import BestOfNConfig

    bon = commands.add_parser(
        "best-of-n", help="generate N candidates per prompt, keep the best by reward",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Best-of-N reranking. Resumable: rerun the same command to continue an interrupted run. "
                    "Under `accelerate launch` the prompts are sharded across processes.",
        epilog="config keys (set in --config YAML or as key=value overrides):\n" + describe(BestOfNConfig))
    bon.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. generation.duration=5")
    bon.add_argument("--n", type=int, help="candidates per prompt (default 32)")
    bon.add_argument("--generator", required=True,
                     help="hub id or local folder (MusicGen, Stable Audio Open, AudioLDM2), 'debug' (= debug-musicgen), "
                          "debug-musicgen, debug-stable-audio or debug-audioldm2")
    prompt_source = bon.add_mutually_exclusive_group(required=True)
    prompt_source.add_argument("--prompts", help="text file, one prompt per line (or JSONL with 'prompt')")
    prompt_source.add_argument("--prompt", nargs="+", help="prompt(s) given inline")
    bon.add_argument("--out", required=True, help="output folder (created; an existing run there is resumed)")
    bon.add_argument("--config", help="YAML config, e.g. recipes/musicgen/best_of_n.yaml")
    bon.add_argument("--save-all", action="store_true", help="write every candidate's audio, not only winners")
    add_reward_options(bon)
    bon.set_defaults(handler=cmd_best_of_n)

    from .cli_ditto import add_ditto_parser
    from .cli_expert_iter import add_expert_iter_parser
    from .cli_reward_tools import add_reward_tool_parsers

    add_ditto_parser(commands, add_reward_options)
    add_expert_iter_parser(commands, add_reward_options)
    add_reward_tool_parsers(commands, add_reward_options)

    report = commands.add_parser("report", help="write RUN_DIR/report.html for a run folder (finished or not)")
    report.add_argument("run_dir", help="the --out folder of an align run")
    report.set_defaults(handler=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # laion-clap's HTSAT calls torch.meshgrid without `indexing`; silence that warning for CLI users.
    warnings.filterwarnings("ignore", message=r"torch\.meshgrid", category=UserWarning)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from .config import ConfigError
    from .hub import ModelNotFoundError
    from .recipes.best_of_n_run import RunMismatchError
    from .reward.head import CheckpointError

    try:
        return args.handler(args)
    except (UsageError, ModelNotFoundError, CheckpointError, ConfigError, RunMismatchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
