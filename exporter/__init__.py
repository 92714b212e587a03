"""The vmhealth exporter: heartbeat ingest, the Proxmox poller, /metrics and the read API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmhealth.config import Config


def create_app(config: Config | None = None) -> Any:
    """WSGI factory for `gunicorn 'vmhealth.exporter:create_app()'` (None: `vmhealth.config.load_from_environment`)."""
    from .app import create_app as _create_app

    return _create_app(config)
