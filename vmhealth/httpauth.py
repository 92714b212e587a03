"""Checking a request's token and refusing it, the same way on the exporter and the webhook.

A token is accepted as `Authorization: Bearer <token>` or, for clients that only speak basic auth,
as the password of `Authorization: Basic` (any user name): Prometheus and Alertmanager can send
either (`authorization: credentials_file:` or `basic_auth: password_file:`). A refusal is counted
and logged (`vmhealth.process_counters`) and slowed down when its address keeps failing
(`vmhealth.auth_throttle`); the right token is never delayed.
"""

from __future__ import annotations

import base64
import hmac
import re

from flask import Flask, Response, current_app, jsonify, request

from vmhealth.auth_throttle import for_limit, penalize
from vmhealth.process_counters import auth_failed

THROTTLE_EXTENSION = "vmhealth_auth_throttle"
_CONVERTER = re.compile(r"<(?:[^:>]+:)?([^>]+)>")  # /vms/<int(min=1):vmid>/reset -> /vms/<vmid>/reset


def install_throttle(app: Flask, per_minute: int) -> None:
    """Give the app its throttle of failed authentications (`auth_failures_per_minute`, 0 for none)."""
    app.extensions[THROTTLE_EXTENSION] = for_limit(per_minute)


def presented_token() -> str | None:
    """The token the request carries: a bearer token, or the password of basic auth; None without one."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    if not value:
        return None
    if scheme.lower() == "bearer":
        return value
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8 (UnicodeDecodeError)
            return None
        return decoded.partition(":")[2] or None
    return None


def token_ok(expected: str | None) -> bool:
    """Constant-time comparison of the request's token with `expected` (never equal when unset)."""
    given = presented_token()
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def refused(what: str) -> str:
    """Count and log (rate-limited) a request refused for its credential: missing or wrong. Its route label."""
    reason = "missing" if not request.headers.get("Authorization") else "wrong"
    rule = _CONVERTER.sub(r"<\1>", request.url_rule.rule) if request.url_rule else request.path
    route = f"{request.method} {rule}"
    auth_failed(route, reason, request.remote_addr, f"{reason} {what}")
    return route


def failed(what: str, route: str | None = None, reason: str = "wrong") -> int | None:
    """A request's credential was missing or wrong: count and log it, wait the throttle's delay for its
    address, and return Retry-After seconds when it is to be answered 429 rather than 401 (else None).
    A form's refusal names its route and reason: `failed("viewer or admin token", "POST /ui/login")`."""
    if route is None:
        route = refused(what)
    else:
        auth_failed(route, reason, request.remote_addr, f"{reason} {what}")
    return penalize(current_app.extensions.get(THROTTLE_EXTENSION), route, request.remote_addr)


def unauthorized(what: str, realm: str) -> Response:
    """The 401 for a missing or wrong `what`, counted; a 429 instead when the address keeps failing."""
    retry_after = failed(what)
    if retry_after:
        response = jsonify({"success": False, "error": "too many failed authentications from this address; "
                                                       f"retry in {retry_after}s"})
        response.status_code = 429
        response.headers["Retry-After"] = str(retry_after)
        return response
    response = jsonify({"success": False, "error": f"missing or wrong {what} (Authorization: Bearer)"})
    response.status_code = 401
    response.headers["WWW-Authenticate"] = f'Bearer realm="{realm}"'
    return response
