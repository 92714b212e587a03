"""Who may read the exporter: with exporter.read_token set, /metrics and the read API answer only a
request that carries it (bearer or basic); ingest has its agent keys, the probes are open."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from vmhealth import appcontext
from vmhealth.httpauth import token_ok, unauthorized

from .service import Exporter

REALM = "vmhealth-exporter"


def require_reader(view: Callable[..., Any]) -> Callable[..., Any]:
    """A view decorator: 401 (or 429) without the read token, when one is set."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = appcontext.get(Exporter).config.exporter.read_token
        if token and not token_ok(token):
            return unauthorized("read token", REALM)
        return view(*args, **kwargs)

    return wrapper
