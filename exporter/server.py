"""`vmhealth exporter`: the exporter app under gunicorn with the configured address."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from vmhealth import appcontext
from vmhealth.gunicorn_runner import serve as serve_app


def stop_app(app: Any) -> None:
    """Write pending last-seen state and stop polling (gunicorn's worker_exit hook)."""
    exporter = appcontext.of(app)
    if exporter is not None:
        exporter.stop()


def serve(config: SimpleNamespace) -> int:
    from vmhealth.exporter.app import create_app

    return serve_app("exporter", config.exporter, lambda: create_app(config), stop_app, config.exporter.max_body_bytes)
