"""Where the monitoring binaries vmhealth runs beside are: Prometheus, promtool, Alertmanager.

Debian installs Alertmanager as `prometheus-alertmanager`; upstream tarballs call it `alertmanager`.
"""

from __future__ import annotations

import shutil

ALTERNATIVES = {"alertmanager": ("alertmanager", "prometheus-alertmanager")}
INSTALL_HINT = "apt-get install prometheus prometheus-alertmanager"


def find_binary(name: str) -> str | None:
    """The path of `name` (or its Debian alternative) on PATH, None when it is not installed."""
    for candidate in ALTERNATIVES.get(name, (name,)):
        path = shutil.which(candidate)
        if path:
            return path
    return None


def require_binary(name: str) -> str:
    """The path of `name`; FileNotFoundError saying how to install it when it is missing."""
    path = find_binary(name)
    if path is None:
        raise FileNotFoundError(f"{name} is not installed ({INSTALL_HINT})")
    return path
