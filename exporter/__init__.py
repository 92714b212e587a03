"""The vmhealth exporter: heartbeat ingest, the Proxmox poller, /metrics and the read API."""

from __future__ import annotations

from typing import Any


def create_app(config: Any = None) -> Any:
    """WSGI factory for `gunicorn 'vmhealth.exporter:create_app()'` (config from --config/env when None)."""
    from vmhealth.exporter.app import create_app as _create_app

    return _create_app(config)
