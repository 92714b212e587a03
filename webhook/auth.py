"""Bearer tokens: Alertmanager's for /alerts, the admin's for resets and releases."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, jsonify, request


def bearer_ok(expected: str | None) -> bool:
    """Constant-time comparison of the request's `Authorization: Bearer` token with `expected`."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not expected or scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


def require_admin(view: Callable[..., Any]) -> Callable[..., Any]:
    """401 unless the request carries webhook.admin_token."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not bearer_ok(current_app.config["VMHEALTH"].webhook.admin_token):
            response = jsonify({"success": False, "error": "missing or wrong admin token (Authorization: Bearer)"})
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Bearer realm="vmhealth-webhook"'
            return response
        return view(*args, **kwargs)

    return wrapper
