"""Inline SVG charts: bars with CI whiskers, and line charts for training curves.

Every label passes through ``escape``: model names come from user configs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

PALETTE = (
    "#3b6fb6",
    "#e07b39",
    "#3f9c5a",
    "#b8453f",
    "#7d5ba6",
    "#8c6d31",
    "#d16ba5",
    "#5f6b7a",
    "#b5a22e",
    "#2fa3b5",
)


MIN_BAR = 2.0  # pixels


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def bar_chart(
    groups: Sequence[str],
    series: Sequence[str],
    values: Sequence[Sequence[tuple[float, float, float] | None]],
    *,
    unit: str = "points",
    width: int = 760,
) -> Markup:
    """Grouped bars: ``values[s][g]`` is (value, low, high) of series s in group g."""
    height, left, bottom, top = 260, 44, 34, 12
    highest = max((v[2] for row in values for v in row if v), default=1.0) or 1.0
    scale = (height - bottom - top) / (highest * 1.08)
    slot = (width - left) / max(len(groups), 1)
    bar = min(28.0, slot * 0.8 / max(len(series), 1))
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" style="max-width: {width}px" '
        'role="img" '
        f'aria-label="bar chart, {escape(unit)}">'
    ]
    for tick in range(5):
        y_value = highest * 1.08 * tick / 4
        y = height - bottom - y_value * scale
        parts.append(
            f'<line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
            f"{y_value:.0f}</text>"
        )
    for g, group in enumerate(groups):
        start = left + g * slot + (slot - bar * len(series)) / 2
        for s, name in enumerate(series):
            entry = values[s][g]
            if entry is None:
                continue
            value, low, high = entry
            x = start + s * bar
            drawn = max(value * scale, MIN_BAR)  # a zero still shows as a sliver, not nothing
            y = height - bottom - drawn
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" '
                f'height="{drawn:.1f}" fill="{color(s)}">'
                f"<title>{escape(name)} {escape(group)}: {value:.2f} "
                f"[{low:.2f}, {high:.2f}]</title></rect>"
            )
            middle = x + (bar - 2) / 2
            y_low, y_high = height - bottom - low * scale, height - bottom - high * scale
            parts.append(
                f'<path d="M{middle:.1f} {y_low:.1f}V{y_high:.1f}M{middle - 3:.1f} {y_low:.1f}'
                f'h6M{middle - 3:.1f} {y_high:.1f}h6" class="whisker"/>'
            )
        parts.append(
            f'<text x="{left + g * slot + slot / 2:.1f}" y="{height - 12}" '
            f'text-anchor="middle" class="label">{escape(group)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    marks: Sequence[tuple[str, float]] = (),
) -> Markup:
    """One line per series of (x, y) points, on shared axes; each mark a dashed vertical
    line at its x (a chosen checkpoint), named in its tooltip."""
    width, height, left, bottom, top = 360, 200, 48, 26, 22
    points = [p for line in series.values() for p in line]
    if not points:
        return Markup("")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) or 1.0
    y0, y1 = min(ys), max(ys)
    if y1 == y0:
        y1 = y0 + 1.0
    sx = (width - left - 8) / ((x1 - x0) or 1.0)
    sy = (height - bottom - top) / (y1 - y0)
    parts = [
        f'<svg class="chart small" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}"><text x="{left}" y="14" class="label">'
        f"{escape(title)}</text>"
    ]
    for value in (y0, (y0 + y1) / 2, y1):
        y = height - bottom - (value - y0) * sy
        parts.append(
            f'<line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
            f"{value:.3g}</text>"
        )
    for index, (name, line) in enumerate(series.items()):
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{left + (x - x0) * sx:.1f} "
            f"{height - bottom - (y - y0) * sy:.1f}"
            for i, (x, y) in enumerate(line)
        )
        parts.append(
            f'<path d="{path}" fill="none" stroke="{color(index)}" stroke-width="2">'
            f"<title>{escape(name)}</title></path>"
        )
    for name, x in marks:
        at = left + (x - x0) * sx
        parts.append(
            f'<line x1="{at:.1f}" x2="{at:.1f}" y1="{top}" y2="{height - bottom}" '
            f'class="mark" stroke="#444" stroke-dasharray="4 3"><title>{escape(name)} '
            f"(step {x:g})</title></line>"
        )
    parts.append(
        f'<text x="{width - 4}" y="{height - 6}" class="tick" text-anchor="end">step</text></svg>'
    )
    return Markup("".join(parts))
