"""The webhook under gunicorn: `vmhealth webhook`, and webhook/gunicorn.conf.py for those who run
gunicorn themselves."""

from __future__ import annotations

from typing import Any

from vmhealth import appcontext
from vmhealth.config import WebhookConfig
from vmhealth.gunicorn_runner import Served

from .app import MAX_BODY_BYTES, create_app


def stop_app(app: Any) -> None:
    """Let running decisions finish and close the database."""
    ctx = appcontext.of(app)
    if ctx is not None:
        ctx.close()


def _max_body_bytes(_section: WebhookConfig) -> int:
    return MAX_BODY_BYTES  # Alertmanager's notifications, whatever the configuration


WEBHOOK = Served("webhook", create_app, stop_app, _max_body_bytes)
serve = WEBHOOK.serve
