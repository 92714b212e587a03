"""`vmhealth webhook`: the webhook app under gunicorn with the configured address."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from vmhealth.gunicorn_runner import gunicorn_settings, run_gunicorn

log = logging.getLogger(__name__)


def stop_app(app: Any) -> None:
    """Let running decisions finish and close the database (gunicorn's worker_exit hook)."""
    ctx = app.extensions.get("vmhealth")
    if ctx is not None:
        ctx.close()


def serve(config: SimpleNamespace) -> int:
    from vmhealth.webhook.app import create_app

    settings = gunicorn_settings(config.webhook.listen, config.webhook.threads,
                                 logging.getLevelName(logging.getLogger().level).lower())
    log.info("webhook listening on %s", config.webhook.listen)
    return run_gunicorn(lambda: create_app(config), settings, stop_app)
