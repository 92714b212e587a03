"""The exporter under gunicorn: `vmhealth exporter`, and exporter/gunicorn.conf.py for those who
run gunicorn themselves."""

from __future__ import annotations

from typing import Any

from vmhealth import appcontext
from vmhealth.config import ExporterConfig
from vmhealth.gunicorn_runner import Served

from .app import create_app


def stop_app(app: Any) -> None:
    """Write pending last-seen state and stop polling."""
    exporter = appcontext.of(app)
    if exporter is not None:
        exporter.stop()


def _max_body_bytes(section: ExporterConfig) -> int:
    return section.max_body_bytes


EXPORTER = Served("exporter", create_app, stop_app, _max_body_bytes)
serve = EXPORTER.serve
