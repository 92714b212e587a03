"""The Prometheus text format's escaping and number rules, shared by every page vmhealth writes.

Standard library only: the agent uses it too.
"""

from __future__ import annotations


def utf8_text(text: str) -> bool:
    """Whether `text` can be stored, logged and exposed: JSON's "\\ud800" escapes decode to lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
