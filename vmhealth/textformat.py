"""The Prometheus text format's escaping and number rules, shared by every page vmhealth writes.

Standard library only: the agent uses it too.
"""

from __future__ import annotations


def escape(value: str) -> str:
    """A label value escaped as the text format requires (backslash, double quote, newline)."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def format_value(value: float | int) -> str:
    """A sample value: integers as they are, floats in full precision, NaN and ±Inf spelled out."""
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
