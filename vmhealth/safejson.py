"""`json.loads` for bodies from the network: nesting too deep for the parser is a ValueError like any
other malformed JSON (a 400), not a RecursionError (a 500 with a traceback)."""

from __future__ import annotations

import json
from typing import Any


def loads(data: str | bytes, **options: Any) -> Any:
    try:
        return json.loads(data, **options)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def request_json(request: Any) -> Any | None:
    """A Flask request's JSON body, or None when it is not JSON or not valid (what `get_json(silent=True)`
    answers, except that too deep a nesting is invalid too)."""
    if not request.is_json:
        return None
    try:
        return loads(request.get_data(cache=True))
    except (ValueError, UnicodeDecodeError):
        return None
