"""Tiny inline-SVG line charts (no plotting dependency): lines, interval bands, axes, legend."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


@dataclass
class Series:
    label: str
    x: list[float]
    y: list[float]
    low: list[float] | None = None
    high: list[float] | None = None
    extra: dict = field(default_factory=dict)


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    start = math.ceil(lo / step) * step
    ticks, value = [], start
    while value <= hi + 1e-12:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


def line_chart(series: list[Series], title: str, x_label: str, y_label: str, *, log2_x: bool = False,
               width: int = 560, height: int = 300) -> str:
    """An ``<svg>`` element (string) plotting each series, with its [low, high] band if given."""
    series = [s for s in series if s.x]
    if not series:
        return f'<p class="empty">{html.escape(title)}: no data yet</p>'
    tx = (lambda v: math.log2(v)) if log2_x else (lambda v: v)
    xs = [tx(x) for s in series for x in s.x]
    ys = [y for s in series for y in s.y] + [v for s in series for v in (s.low or []) + (s.high or [])]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
    left, right, top, bottom = 56, 16, 28, 44
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x):
        return left + (tx(x) - x0) / (x1 - x0) * plot_w

    def py(y):
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}"><title>{html.escape(title)}</title>',
             f'<text x="{width / 2}" y="16" text-anchor="middle" class="chart-title">{html.escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    y_ticks = _ticks(y0, y1)
    step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else abs(y1 - y0) or 1.0
    decimals = max(0, 1 - math.floor(math.log10(step)))  # enough digits to tell neighbouring ticks apart
    for tick in y_ticks:
        label = f"{tick:.{decimals}f}" if decimals <= 6 else _fmt(tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end" class="tick">{label}</text>')
    x_ticks = sorted({x for s in series for x in s.x}) if log2_x or len({x for s in series for x in s.x}) <= 12 \
        else [v for v in _ticks(x0, x1)]
    for tick in x_ticks:
        parts.append(f'<text x="{px(tick):.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="tick">'
                     f'{_fmt(tick)}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" class="axis">'
                 f'{html.escape(x_label)}</text>')
    parts.append(f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" class="axis" '
                 f'transform="rotate(-90 14 {top + plot_h / 2})">{html.escape(y_label)}</text>')
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        if s.low and s.high:
            upper = " ".join(f"{px(x):.1f},{py(h):.1f}" for x, h in zip(s.x, s.high))
            lower = " ".join(f"{px(x):.1f},{py(lo):.1f}" for x, lo in reversed(list(zip(s.x, s.low))))
            parts.append(f'<polygon points="{upper} {lower}" fill="{color}" fill-opacity="0.18" stroke="none"/>')
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(s.x, s.y))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in zip(s.x, s.y):
            parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>')
        if len(series) > 1:
            parts.append(f'<text x="{left + 8}" y="{top + 14 + 14 * i}" fill="{color}" class="legend">'
                         f'{html.escape(s.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
