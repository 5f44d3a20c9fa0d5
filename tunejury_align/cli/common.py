"""What every ``align`` command shares: exit codes, errors, the reward and run arguments, reading
prompts, the output folder check, printing names safely, and the prompts -> generator -> reward set-up
(checked before any expensive work)."""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import unicodedata
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
DEBUG_NOTE = ("debug reward: the debug world's learned proxy of its known truth (tunejury_align.debug), "
              "not of human preference")
#: appended to what a command prints about a run on the debug models
DEBUG_LABEL = " (debug world: the reward is a learned proxy of a known truth, printed beside it)"
OVERRIDE_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*=\S*"


class UsageError(Exception):
    """Bad arguments or inputs found before any work starts (exit code 2)."""


# -- what is printed -----------------------------------------------------------------------------
def printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` with control and other non-printing characters escaped (``\\x1b``, ``\\u202e``), for every
    prompt or file name printed: a name cannot recolour the terminal, move its cursor or reorder a line."""
    return "".join(ch if ch.isprintable() or (keep_newlines and ch == "\n")
                   else ch.encode("unicode_escape").decode("ascii") for ch in str(text))


def display_width(text: str) -> int:
    """Terminal columns of ``text``: wide (CJK) characters take two, combining marks none."""
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, width: int) -> str:
    """``text`` left-aligned in ``width`` terminal columns."""
    return text + " " * max(0, width - display_width(text))


# -- the reward ----------------------------------------------------------------------------------
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
    group.add_argument("--judges", action="append", metavar="SPEC[,SPEC...]",
                       help="held-out heads scored beside the reward on its own features: hub owner/repo/FILE.pt, a "
                            "local .pt file or a folder of them, or 'debug' (the debug world's judges); repeatable")


def world_from(settings: list[str]) -> dict:
    """``["world.truth=X"]`` -> ``{"truth": "X"}`` (the ``world`` settings of a command without a config)."""
    from ..config import ConfigError, parse_override

    world: dict = {}
    for text in settings:
        try:
            keys, value = parse_override(text)
        except ConfigError as err:
            raise UsageError(str(err)) from err
        if len(keys) != 2 or keys[0] != "world":
            raise UsageError(f"'{text}' is not a world setting (world.truth=...)")
        world[keys[1]] = str(value)
    return world


def world_truth(args, world: dict | None):
    """The truth of the debug world (the ``world.truth`` setting, resolved now, before any model loads), or
    ``None`` when neither the generator nor the reward is a debug model (then a ``world.truth`` other than the
    default is a :class:`UsageError`: there is no debug world to give it to)."""
    from ..debug.worlds import DEFAULT_TRUTH, TruthError, resolve_truth, world_settings

    try:
        settings = world_settings(world)
        in_world = getattr(args, "reward", None) == "debug" or str(getattr(args, "generator", "")).startswith("debug")
        if not in_world:
            if settings["truth"] != DEFAULT_TRUTH:
                raise UsageError(f"world.truth={settings['truth']} sets the debug world's truth, but neither "
                                 "--generator nor --reward is a debug model: use them with debug models, or drop it")
            return None
        return resolve_truth(settings["truth"])
    except TruthError as err:
        raise UsageError(str(err)) from err


def truth_text(truth) -> str:
    """How a command names the truth it prints beside the reward: ``the debug world's truth <name>``."""
    from ..debug.worlds import truth_label

    return f"the debug world's truth {truth_label(truth)}"


def world_progress():
    """The debug world's build progress, as the CLI shows it (one line or bar per phase)."""
    from .progress import Phases

    return Phases(lambda phase: "epochs" if phase.endswith("head") else "prompts")


def load_reward(args, truth=None):
    """``--reward`` (``debug``: the debug world's proxy of ``truth``, built on first use with its progress shown)."""
    import torch

    from ..reward import TuneJuryReward, debug_reward

    dtype = getattr(torch, args.dtype)
    device = resolve_device(args.device, None)
    dtype = None if dtype == torch.float32 else dtype
    if args.reward == "debug":  # built once per machine and truth (under a minute), then loaded from the cache
        from ..debug.build import build_world
        from ..reward.judges import DEBUG_JUDGES, parse_judges

        specs = parse_judges(getattr(args, "judges", None))
        judges = [name for spec in specs if spec == "debug" or spec.startswith("debug:")
                  for name in (DEBUG_JUDGES if spec == "debug" else [spec[len("debug:"):]]) if name in DEBUG_JUDGES]
        progress = world_progress()
        try:
            build_world(truth, judges, progress)  # with debug judges: their clips generated once with the reward's
            return debug_reward(protocol=args.protocol, device=device, dtype=dtype, progress=progress, truth=truth)
        finally:
            progress.close()
    return TuneJuryReward.from_pretrained(args.reward, clap=args.clap, mert=args.mert, text_model=args.text_model,
                                          protocol=args.protocol, device=device, dtype=dtype)


def load_judges_for(args, reward) -> list:
    """The ``--judges`` heads, checked against the reward's encoders (a :class:`UsageError` otherwise)."""
    from ..reward.head import CheckpointError
    from ..reward.judges import JudgeError, load_judges

    progress = world_progress()
    try:
        return load_judges(getattr(args, "judges", None), reward, progress=progress)
    except (JudgeError, CheckpointError, FileNotFoundError) as err:
        raise UsageError(f"--judges: {err}") from err
    finally:
        progress.close()


def run_scorers(args, generator, reward, meta: dict | None = None, truth=None) -> dict:
    """What every recipe records beside the reward: the debug world's ``truth`` (debug generators) and the judges'
    scores (``judge_<name>``); the truth's identity and the judges are written into ``meta`` (a resume must use
    the same ones)."""
    from ..debug import world_scorers
    from ..debug.worlds import truth_identity, truth_label
    from ..reward.judges import judge_scorers

    reference = getattr(args, "reference", None)
    if reference is not None and not Path(reference).is_dir():
        raise UsageError(f"--reference {reference} is not a folder; give a folder of audio files")
    judges = load_judges_for(args, reward)
    if judges and meta is not None:
        meta["judges"] = [judge.info() for judge in judges]
    world = world_scorers(generator, truth)
    if world and meta is not None:
        meta["world"] = {"truth": truth_label(world["truth"]), "truth_identity": truth_identity(world["truth"])}
    return {**world, **judge_scorers(reward, judges)}


# -- the run arguments ---------------------------------------------------------------------------
def add_run_options(parser: argparse.ArgumentParser, *, generator_help: str, config_example: str,
                    override_example: str) -> None:
    """Overrides, --generator, --prompts/--prompt (repeatable: the prompts add up), --out, --config."""
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"config overrides, e.g. {override_example}")
    parser.add_argument("--generator", required=True, help=generator_help)
    prompt_source = parser.add_mutually_exclusive_group(required=True)
    prompt_source.add_argument("--prompts", help="text file, one prompt per line (or JSONL with 'prompt')")
    prompt_source.add_argument("--prompt", nargs="+", action="extend",
                               help="prompt(s) given inline; repeat the flag or list several after it")
    parser.add_argument("--out", required=True, help="output folder (created; an existing run there is resumed)")
    parser.add_argument("--config", help=f"YAML config, e.g. {config_example}")
    parser.add_argument("--reference", metavar="DIR",
                        help="folder of audio (e.g. real music) the hacking alarm's distribution checks compare the "
                             "kept outputs with (default: the run's own baseline)")


def split_overrides_from_prompts(args) -> None:
    """``--prompt a b n=8`` : argparse gives ``n=8`` to --prompt; a token shaped ``key=value`` with no
    spaces is a config override, not a prompt."""
    if not args.prompt:
        return
    prompts = [p for p in args.prompt if not re.fullmatch(OVERRIDE_PATTERN, p)]
    args.overrides = list(args.overrides) + [p for p in args.prompt if re.fullmatch(OVERRIDE_PATTERN, p)]
    args.prompt = prompts
    if not prompts:
        raise UsageError("--prompt got only key=value overrides; give at least one prompt")


def read_prompts_from(path: Path) -> list[str]:
    """Prompts of a text file (one per line, ``#`` comments) or a JSONL file (``{"prompt": ...}``)."""
    if not path.is_file():
        raise UsageError(f"prompts file {path} not found")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark is not part of a prompt
    except UnicodeDecodeError as err:
        raise UsageError(f"prompts file {path} is not UTF-8 text ({err})") from err
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if path.suffix.lower() == ".jsonl":
            try:
                prompts.append(str(json.loads(line)["prompt"]))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise UsageError(f"{path}:{number}: expected a JSON object with a 'prompt' ({err})") from err
        else:
            prompts.append(line.strip())
    if not prompts:
        raise UsageError(f"prompts file {path} holds no prompts (one per line; '#' starts a comment)")
    return prompts


def read_prompts(args) -> list[str]:
    """Prompts from --prompt (repeatable) or --prompts FILE; ``key=value`` tokens after --prompt
    become overrides."""
    split_overrides_from_prompts(args)
    if args.prompt:
        return list(args.prompt)
    if args.prompts:
        return read_prompts_from(Path(args.prompts))
    raise UsageError("give prompts with --prompts FILE or --prompt TEXT")


# -- the output folder ---------------------------------------------------------------------------
def _io_reason(err: OSError) -> str:
    hints = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up", errno.EACCES: "not writable",
             errno.EPERM: "not writable", errno.EROFS: "not writable: a read-only file system",
             errno.ENOTDIR: "a part of the path is a file"}
    hint = hints.get(err.errno)
    return f"{hint}: {err.strerror}" if hint else (err.strerror or str(err))


def check_output_dir(out: str, *, is_main: bool = True, label: str | None = None, lock: bool = True) -> Path:
    """Before any model is loaded: ``out`` must be a folder that can be created and written in (a probe
    file is written, fsync'd and removed) and that no other run holds (:func:`~tunejury_align.rundir.run_lock`).
    Folders made for the check are removed again, so a command refused later leaves nothing behind.
    Under ``accelerate launch`` only the main process checks (the others would race its clean-up).
    ``label`` names the folder in messages (default ``--out PATH``); ``lock=False`` skips the run lock."""
    from ..rundir import run_lock

    path = Path(out).expanduser()
    label = label or f"--out {path}"
    if not is_main:
        return path
    if path.exists() and not path.is_dir():
        raise UsageError(f"{label} is a file, not a folder; give a folder (it is created if missing)")
    created = [folder for folder in (path, *path.parents) if not folder.exists()]  # deepest first
    probe = path / f".align-write-probe-{os.getpid()}"
    try:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"{label}: cannot create the folder ({_io_reason(err)})") from err
        try:
            with open(probe, "wb") as handle:
                handle.write(b"align")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            raise UsageError(f"{label}: cannot write in the folder ({_io_reason(err)})") from err
    finally:
        with suppress(OSError):
            probe.unlink(missing_ok=True)
        for folder in created:
            with suppress(OSError):
                folder.rmdir()
    if lock and not created:
        with run_lock(path):  # refused now, not after the models load
            pass
    return path


def check_output_file(out: str, flag: str = "--out") -> Path:
    """Before any model loads: a file to write must not be a folder, and its folder must pass
    :func:`check_output_dir` (without the run lock)."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give the file to write")
    check_output_dir(str(path.parent), label=f"{flag} {path} (its folder {path.parent})", lock=False)
    return path


# -- devices and processes -----------------------------------------------------------------------
def _no_barrier() -> None:
    return None


@dataclass
class Processes:
    """This process's place under ``accelerate launch`` / torchrun (rank 0 of 1 otherwise)."""

    rank: int = 0
    world_size: int = 1
    barrier: Callable[[], None] = _no_barrier
    device: object = None  # the device the launcher gives this process, if any

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_state() -> Processes:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    on_cpu = not torch.cuda.is_available()
    state = PartialState(cpu=on_cpu)  # without cpu=True, CPU-only processes do not join the gloo group
    return Processes(state.process_index, state.num_processes, state.wait_for_everyone,
                     "cpu" if on_cpu else state.device)


def resolve_device(requested: str, distributed_device) -> str:
    import torch

    if requested != "auto":
        return requested
    if distributed_device is not None:
        return str(distributed_device)
    return "cuda" if torch.cuda.is_available() else "cpu"


# -- prompts -> generator -> reward ----------------------------------------------------------------
def check_generation_options(generator, options: dict) -> None:
    """Build the generator's options object now, so a bad key fails before any generation."""
    build = getattr(generator, "options", None)
    if build is None:
        return
    options_class = getattr(generator, "options_class", None)
    if options_class is not None:
        from ..config import ConfigError, check_fields

        try:
            check_fields(options_class, options, prefix="generation.")
        except ConfigError as err:
            raise UsageError(f"bad generation option for {generator.name}: {err}") from err
    try:
        build(**options)
    except TypeError as err:
        import dataclasses

        valid = sorted(f.name for f in dataclasses.fields(generator.options_class))
        raise UsageError(f"bad generation option for {generator.name}: {err}; valid: {valid}") from err
    except ValueError as err:
        raise UsageError(f"bad generation option for {generator.name}: {err}") from err


def load_models(args, *, debug_default: str, generation: dict, processes: Processes | None = None, wrap=None,
                truth=None):
    """The generator (``--generator``, ``debug`` -> ``debug_default``; ``wrap(generator)`` may adapt it,
    or refuse it with a TypeError / ValueError) with its options checked, then the reward (the debug reward of
    ``truth``'s world with ``--reward debug``). Sets ``args.device``."""
    from ..generators import load_generator

    args.device = resolve_device(args.device, processes.device if processes else None)
    generator = load_generator(args.generator, debug_default=debug_default, device=args.device)
    if wrap is not None:
        try:
            generator = wrap(generator)
        except (TypeError, ValueError, NotImplementedError) as err:
            raise UsageError(str(err)) from err
    check_generation_options(generator, generation)
    return generator, load_reward(args, truth)
