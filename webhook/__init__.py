"""The remediation webhook: Alertmanager receiver, reset policy, Proxmox actions and history."""

from __future__ import annotations

from typing import Any


def create_app(config: Any = None, **options: Any) -> Any:
    """WSGI factory for `gunicorn 'vmhealth.webhook:create_app()'` (config from --config/env when None)."""
    from vmhealth.webhook.app import create_app as _create_app

    return _create_app(config, **options)
