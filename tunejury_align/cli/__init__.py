"""``align``: the command line, a thin layer over the library and the only place that prints.

One module per command group; :mod:`.common` holds what they share. The subcommands are a literal
list (``COMMANDS``), in the order ``align --help`` shows them.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
import warnings

from .. import __version__
from . import best_of_n, ditto, expert_iter, report, reward_tools, score, smc
from .common import EXIT_SOME_FAILED, EXIT_USAGE, UsageError, printable

COMMANDS = [score, best_of_n, smc, ditto, expert_iter, reward_tools, report]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="align", description="Align text-to-music generators with the "
                                     "TuneJury reward: score, best-of-N (pruned), particle steering, DITTO, expert iteration, compare.")
    parser.add_argument("--version", action="version", version=f"tunejury-align {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `align score FILE --reward debug world.truth=X`: a setting after the options (argparse gives a positional
    # list only the strings before them); anything else unknown is the usual error
    from .score import WORLD_SETTING

    if extra and getattr(args, "command", None) == "score" and all(WORLD_SETTING.match(item) for item in extra):
        args.inputs = [*args.inputs, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # laion-clap's HTSAT calls torch.meshgrid without `indexing`; silence that warning for CLI users.
    warnings.filterwarnings("ignore", message=r"torch\.meshgrid", category=UserWarning)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from ..config import ConfigError
    from ..hub import ModelNotFoundError
    from ..reward.head import CheckpointError
    from ..rundir import RunFileError, RunIncompleteError, RunLockedError, RunMismatchError

    try:
        return args.handler(args)
    except (UsageError, ModelNotFoundError, CheckpointError, ConfigError, RunMismatchError, RunFileError,
            RunLockedError) as err:
        print(f"error: {printable(str(err), keep_newlines=True)}", file=sys.stderr)
        return EXIT_USAGE
    except RunIncompleteError as err:
        print(f"error: {printable(str(err))}", file=sys.stderr)
        return EXIT_SOME_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        out = getattr(args, "out", None)
        where = f" in {out}" if out else ""
        print(f"error: no space left on device ({printable(str(err))}). Nothing already written is lost: every "
              f"file{where} is written whole or not at all. Free some space and rerun the same command to resume.",
              file=sys.stderr)
        return EXIT_SOME_FAILED


__all__ = ["COMMANDS", "build_parser", "main"]
