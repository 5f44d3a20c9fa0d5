"""``align report RUN_DIR``: one self-contained ``report.html`` per run folder.

Plots are inline SVG; audio is referenced by paths relative to the report, so the folder can be moved
or zipped. A half-finished run shows what exists so far.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..runio import atomic_write_text

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { border: 1px solid #ddd; padding: 4px 8px;
vertical-align: top; text-align: left; } th { background: #f5f5f5; }
.debug { background: #fff3cd; border: 1px solid #e0c36c; padding: 0.6em; }
.missing { color: #999; font-style: italic; } .chart-title { font-weight: bold; font-size: 13px; }
.tick { font-size: 10px; fill: #555; } .axis { font-size: 12px; } .legend { font-size: 11px; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 12px; } .charts svg { margin: 4px; }
audio { width: 240px; } .score { font-family: monospace; }
"""


class ReportError(ValueError):
    """A folder that is not a run folder."""


def esc(value) -> str:
    return html.escape(str(value))


def audio_player(run_dir: Path, relative: str | None, label: str = "") -> str:
    if relative and (run_dir / relative).is_file():
        return (f'<div>{esc(label)}<br><audio controls preload="none" src="{esc(relative)}"></audio></div>')
    return f'<div class="missing">{esc(label)} not written yet</div>'


def read_jsonl_lenient(path: Path) -> list[dict]:
    from ..runio import read_jsonl

    return read_jsonl(path)


def config_section(run: dict) -> str:
    models = {key: run.get(key) for key in ("generator", "reward") if key in run}
    return ("<h2>Configuration</h2>"
            f"<h3>Settings</h3><pre>{esc(json.dumps(run.get('config', {}), indent=1, sort_keys=True))}</pre>"
            f"<h3>Models and checkpoint hashes</h3><pre>{esc(json.dumps(models, indent=1, sort_keys=True))}</pre>"
            f"<h3>Versions</h3><pre>{esc(json.dumps(run.get('versions', {}), indent=1, sort_keys=True))}</pre>")


def is_debug(run: dict) -> bool:
    return bool((run.get("generator") or {}).get("debug") or (run.get("reward") or {}).get("debug"))


def build_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report.html`` and return its path."""
    from .sections import SECTIONS

    run_dir = Path(run_dir)
    meta_path = run_dir / "run.json"
    if not meta_path.is_file():
        raise ReportError(f"{run_dir} is not a run folder (no run.json); pass the --out folder of an align run")
    run = json.loads(meta_path.read_text())
    command = run.get("command", "")
    if command not in SECTIONS:
        raise ReportError(f"{run_dir}: unknown run type '{command}' (known: {sorted(SECTIONS)})")
    banner = ('<p class="debug">Debug models: tiny random weights. The scores and audio mean nothing; '
              "this run only exercises the pipeline.</p>") if is_debug(run) else ""
    body = SECTIONS[command](run_dir, run)
    title = f"{command} report: {run_dir.resolve().name}"
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{banner}{body}{config_section(run)}"
            "</body></html>\n")
    out = run_dir / "report.html"
    atomic_write_text(out, page)
    return out
