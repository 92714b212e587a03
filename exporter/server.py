"""`vmhealth exporter`: the exporter app under gunicorn with the configured address."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from vmhealth.gunicorn_runner import gunicorn_settings, run_gunicorn

log = logging.getLogger(__name__)


def stop_app(app: Any) -> None:
    """Write pending last-seen state and stop polling (gunicorn's worker_exit hook)."""
    exporter = app.extensions.get("vmhealth_exporter")
    if exporter is not None:
        exporter.stop()


def serve(config: SimpleNamespace) -> int:
    from vmhealth.exporter.app import create_app

    settings = gunicorn_settings(config.exporter.listen, config.exporter.threads,
                                 logging.getLevelName(logging.getLogger().level).lower())
    log.info("exporter listening on %s", config.exporter.listen)
    return run_gunicorn(lambda: create_app(config), settings, stop_app)
