"""`vmhealth webhook`: the webhook app under gunicorn with the configured address."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from vmhealth import appcontext
from vmhealth.gunicorn_runner import serve as serve_app


def stop_app(app: Any) -> None:
    """Let running decisions finish and close the database (gunicorn's worker_exit hook)."""
    ctx = appcontext.of(app)
    if ctx is not None:
        ctx.close()


def serve(config: SimpleNamespace) -> int:
    from vmhealth.webhook.app import MAX_BODY_BYTES, create_app

    return serve_app("webhook", config.webhook, lambda: create_app(config), stop_app, MAX_BODY_BYTES)
