"""``align report RUN_DIR``: one self-contained ``report.html`` per run folder.

Plots are inline SVG; audio is referenced by paths relative to the report, so the folder can be moved
or zipped. A half-finished run shows what exists so far.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..debug.worlds import recorded_truth
from ..rundir import atomic_write_text, is_debug
from .html import STYLE, ReportError, esc
from .judges import alarm_banner
from .sections import SECTIONS


def config_section(run: dict) -> str:
    models = {key: run.get(key) for key in ("generator", "reward") if key in run}
    return ("<h2>Configuration</h2>"
            f"<h3>Settings</h3><pre>{esc(json.dumps(run.get('config', {}), indent=1, sort_keys=True))}</pre>"
            f"<h3>Models and checkpoint hashes</h3><pre>{esc(json.dumps(models, indent=1, sort_keys=True))}</pre>"
            f"<h3>Versions</h3><pre>{esc(json.dumps(run.get('versions', {}), indent=1, sort_keys=True))}</pre>")


def build_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report.html`` and return its path."""
    run_dir = Path(run_dir)
    meta_path = run_dir / "run.json"
    if not meta_path.is_file():
        raise ReportError(f"{run_dir} is not a run folder (no run.json); pass the --out folder of an align run")
    run = json.loads(meta_path.read_text())
    command = run.get("command", "")
    if command not in SECTIONS:
        raise ReportError(f"{run_dir}: unknown run type '{command}' (known: {sorted(SECTIONS)})")
    banner = ('<p class="debug">Debug world: tiny models whose reward is a learned proxy of a known truth '
              f"(<code>{esc(recorded_truth(run) or '')}</code>), not of human preference; the truth is drawn beside "
              "the reward, so gains and reward hacking can be seen.</p>") if is_debug(run) else ""
    banner += alarm_banner(run_dir)
    body = SECTIONS[command](run_dir, run)
    title = f"{command} report: {run_dir.resolve().name}"
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{banner}{body}{config_section(run)}"
            "</body></html>\n")
    out = run_dir / "report.html"
    atomic_write_text(out, page)
    return out


__all__ = ["ReportError", "build_report"]
