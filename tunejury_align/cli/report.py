"""``align report RUN_DIR``: write the run folder's self-contained ``report.html``; ``align compare RUN_DIR...``:
reward against compute over several runs."""

from __future__ import annotations

from .common import EXIT_OK, UsageError, printable


def add_parser(commands) -> None:
    report = commands.add_parser("report", help="write RUN_DIR/report.html for a run folder (finished or not)")
    report.add_argument("run_dir", help="the --out folder of an align run")
    report.set_defaults(handler=cmd_report)
    compare = commands.add_parser("compare", help="mean reward (and truth) vs compute of several runs on the same "
                                                  "prompts: one HTML page and a JSON file")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished best-of-n, smc, ditto or expert-iter run folders")
    compare.add_argument("--out", default="compare.html", help="the page (the .json beside it; default %(default)s)")
    compare.set_defaults(handler=cmd_compare)


def cmd_report(args) -> int:
    from ..report import ReportError, build_report

    try:
        print(build_report(args.run_dir))
    except ReportError as err:
        raise UsageError(str(err)) from err
    return EXIT_OK


def cmd_compare(args) -> int:
    from ..report import ReportError
    from ..report.compare import compare

    try:
        result = compare(args.run_dirs, args.out)
    except ReportError as err:
        raise UsageError(str(err)) from err
    for entry in result["runs"]:
        truth = f"  truth {entry['truth']['mean']:.4f}" if "truth" in entry else ""
        passes = (entry.get("compute") or {}).get("generator_passes", "?")
        print(f"{printable(entry['label'])}: reward {entry['reward']['mean']:.4f}{truth}  passes {passes}")
    return EXIT_OK
