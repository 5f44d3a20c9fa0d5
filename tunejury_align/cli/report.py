"""``align report RUN_DIR``: write the run folder's self-contained ``report.html``."""

from __future__ import annotations

from .common import EXIT_OK, UsageError


def add_parser(commands) -> None:
    report = commands.add_parser("report", help="write RUN_DIR/report.html for a run folder (finished or not)")
    report.add_argument("run_dir", help="the --out folder of an align run")
    report.set_defaults(handler=cmd_report)


def cmd_report(args) -> int:
    from ..report import ReportError, build_report

    try:
        print(build_report(args.run_dir))
    except ReportError as err:
        raise UsageError(str(err)) from err
    return EXIT_OK
