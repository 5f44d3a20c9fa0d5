"""HTML pieces shared by the report's sections: the page style, escaping, audio players."""

from __future__ import annotations

import html
from pathlib import Path

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
.alarm { padding: 0.6em; } .alarm.ok { background: #e8f5e9; border: 1px solid #81c784; }
.alarm.suspected { background: #fdecea; border: 2px solid #e57373; }
"""


class ReportError(ValueError):
    """A folder that is not a run folder."""


def esc(value) -> str:
    return html.escape(str(value))


def audio_player(run_dir: Path, relative: str | None, label: str = "") -> str:
    if relative and (run_dir / relative).is_file():
        return (f'<div>{esc(label)}<br><audio controls preload="none" src="{esc(relative)}"></audio></div>')
    return f'<div class="missing">{esc(label)} not written yet</div>'
