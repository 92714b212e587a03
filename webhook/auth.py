"""Bearer tokens: Alertmanager's for /alerts, the admin's for resets and releases, the viewer's for reading."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, jsonify, request

from vmhealth.process_counters import auth_failed

_CONVERTER = re.compile(r"<(?:[^:>]+:)?([^>]+)>")  # /vms/<int(min=1):vmid>/reset -> /vms/<vmid>/reset


def bearer_ok(expected: str | None) -> bool:
    """Constant-time comparison of the request's `Authorization: Bearer` token with `expected`."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not expected or scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


def refused(what: str) -> None:
    """Count and log (rate-limited) a request refused for its credential: missing or wrong."""
    reason = "missing" if not request.headers.get("Authorization") else "wrong"
    route = _CONVERTER.sub(r"<\1>", request.url_rule.rule) if request.url_rule else request.path
    auth_failed(f"{request.method} {route}", reason, request.remote_addr, f"{reason} {what}")


def require_admin(view: Callable[..., Any]) -> Callable[..., Any]:
    """401 unless the request carries webhook.admin_token."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not bearer_ok(current_app.config["VMHEALTH"].webhook.admin_token):
            refused("admin token")
            response = jsonify({"success": False, "error": "missing or wrong admin token (Authorization: Bearer)"})
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Bearer realm="vmhealth-webhook"'
            return response
        return view(*args, **kwargs)

    return wrapper


def reader_ok() -> bool:
    """The request carries the viewer token or the admin token: either may read."""
    webhook = current_app.config["VMHEALTH"].webhook
    return bearer_ok(webhook.viewer_token) or bearer_ok(webhook.admin_token)
