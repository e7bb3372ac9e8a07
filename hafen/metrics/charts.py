"""Charts as SVG rendered on the server: line charts over time and horizontal bars. No front-end build.

The markup is built from numbers and escaped labels only, so it is safe to include in a page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from hafen.metrics.clients import Series

WIDTH, HEIGHT = 560, 190
LEFT, RIGHT, TOP, BOTTOM = 56, 10, 32, 24
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")


def human(value: float, unit: str) -> str:
    if unit == "bytes":
        for suffix, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if abs(value) >= size:
                return f"{value / size:.1f} {suffix}"
        return f"{value:.0f} B"
    if unit == "%":
        return f"{value:.1f} %"
    if abs(value) >= 100 or value == int(value):
        return f"{value:.0f}{(' ' + unit) if unit else ''}"
    return f"{value:.2f}{(' ' + unit) if unit else ''}"


def line_chart(title: str, series: list[tuple[str, Series]], unit: str, start: float, end: float) -> str:
    """One chart: a polyline per series over [start, end], the y axis from 0 to the largest value."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = max((v for _, s in series for _, v in s.points), default=0.0)
    top = top * 1.1 if top > 0 else 1.0
    span = max(end - start, 1.0)

    def x(t: float) -> float:
        return LEFT + (t - start) / span * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - v / top * plot_h

    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="{LEFT}" y="14" class="chart-title">{escape(title)}</text>',
             f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>']
    for frac in (0.0, 0.5, 1.0):
        value = top * frac
        parts.append(f'<text x="{LEFT - 4}" y="{y(value) + 4:.1f}" text-anchor="end" class="chart-axis">'
                     f'{escape(human(value, unit))}</text>')
    fmt = "%H:%M" if span <= 2 * 86400 else "%d.%m."
    for frac in (0.0, 0.5, 1.0):
        t = start + span * frac
        anchor = "start" if frac == 0 else ("end" if frac == 1 else "middle")
        parts.append(f'<text x="{x(t):.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}" class="chart-axis">'
                     f'{datetime.fromtimestamp(t, UTC).strftime(fmt)}</text>')
    legend: list[str] = []
    for i, (label, s) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in s.points)
        if points:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>')
            t, v = s.points[-1]  # the newest value, marked (a short series would be a speck at the edge)
            parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>')
            label = f"{label} {human(v, unit)}"
        legend.append(f'<tspan fill="{colour}" dx="10">{escape(label)}</tspan>')
    # the legend at the top right, on the line below the title
    parts.append(f'<text x="{WIDTH - RIGHT}" y="{TOP - 3}" text-anchor="end" class="chart-legend">'
                 f'{"".join(legend)}</text>')
    if not any(s.points for _, s in series):
        parts.append(f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" text-anchor="middle" '
                     f'class="chart-empty">no data yet</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, rows: list[tuple[str, float]], unit: str, maximum: float | None = None) -> str:
    """Horizontal bars, one per row (label, value), largest first as given."""
    bar_h, gap = 18, 6
    height = TOP + max(len(rows), 1) * (bar_h + gap) + 4
    label_w = 150
    plot_w = WIDTH - label_w - 80
    top = maximum or max((v for _, v in rows), default=0.0) or 1.0
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="4" y="14" class="chart-title">{escape(title)}</text>']
    for i, (label, value) in enumerate(rows):
        y = TOP + i * (bar_h + gap)
        width = max(1.0, min(value / top, 1.0) * plot_w)
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" class="chart-axis">'
                     f'{escape(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{width:.1f}" height="{bar_h}" fill="{COLOURS[0]}"/>')
        parts.append(f'<text x="{label_w + width + 4:.1f}" y="{y + 13}" class="chart-axis">'
                     f'{escape(human(value, unit))}</text>')
    if not rows:
        parts.append(f'<text x="4" y="{TOP + 14}" class="chart-empty">none</text>')
    parts.append("</svg>")
    return "".join(parts)
