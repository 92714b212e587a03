"""A chart as an SVG path, drawn on the server: the console needs no JavaScript and no chart library."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT = 300.0, 60.0


@dataclass(frozen=True)
class Sparkline:
    path: str  # the `d` of an SVG <path>, in a WIDTH x HEIGHT box; "" when there is nothing to draw
    low: float
    high: float
    last: float | None


def sparkline(points: list[tuple[float, float]], start: float, end: float, gap: float) -> Sparkline:
    """`points` (time, value) between `start` and `end` scaled into the box, from 0 (or the lowest
    value, if negative) to the highest; a pause longer than `gap` between samples breaks the line."""
    if not points or end <= start:
        return Sparkline("", 0.0, 0.0, None)
    values = [v for _, v in points]
    low, high = min(0.0, min(values)), max(values)
    span = (high - low) or 1.0
    parts: list[str] = []
    previous: float | None = None
    for t, v in points:
        x = (t - start) / (end - start) * WIDTH
        y = HEIGHT - (v - low) / span * HEIGHT
        command = "L" if previous is not None and t - previous <= gap else "M"
        parts.append(f"{command}{x:.1f} {y:.1f}")
        previous = t
    return Sparkline(" ".join(parts), low, high, values[-1])
