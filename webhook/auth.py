"""Who may do what on the webhook: Alertmanager's token for /alerts, the admin's for resets and
releases, the viewer's (or the admin's) for reading (the history also without a token with
webhook.public_history), and, when set, webhook.metrics_token for /metrics.

Every refusal but Alertmanager's is slowed down when its address keeps failing (`vmhealth.auth_throttle`);
Alertmanager does not retry a 429, so /alerts only counts its failures.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from vmhealth import appcontext
from vmhealth.httpauth import refused, token_ok, unauthorized

from .context import WebhookContext

__all__ = ["bearer_ok", "reader_ok", "refused", "require_admin", "require_history", "require_metrics",
           "require_reader"]
REALM = "vmhealth-webhook"
bearer_ok = token_ok  # the name the routes and the console use


def _guarded(allowed: Callable[[], bool], what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A view decorator: 401 (or 429) unless `allowed()`."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not allowed():
                return unauthorized(what, REALM)
            return view(*args, **kwargs)

        return wrapper

    return decorate


def reader_ok() -> bool:
    """The request carries the viewer token or the admin token: either may read."""
    webhook = appcontext.get(WebhookContext).config.webhook
    return token_ok(webhook.viewer_token) or token_ok(webhook.admin_token)


def _admin_ok() -> bool:
    return token_ok(appcontext.get(WebhookContext).config.webhook.admin_token)


def _history_ok() -> bool:
    return bool(appcontext.get(WebhookContext).config.webhook.public_history) or reader_ok()


def _metrics_ok() -> bool:
    token = appcontext.get(WebhookContext).config.webhook.metrics_token
    return not token or token_ok(token) or reader_ok()


require_admin = _guarded(_admin_ok, "admin token")
require_reader = _guarded(reader_ok, "viewer or admin token")
require_history = _guarded(_history_ok, "viewer or admin token")
require_metrics = _guarded(_metrics_ok, "metrics, viewer or admin token")
