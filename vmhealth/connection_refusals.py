"""Connections the servers refused or cut, by reason: counted by the gunicorn worker, shown in /metrics.

The worker and the app run in the same process (one worker per server), so a process-wide count is
what both the exporter's and the webhook's /metrics report as `vmhealth_http_connections_refused_total`.
"""

from __future__ import annotations

import threading

FAMILY = "vmhealth_http_connections_refused_total"
HELP = ("Connections refused at accept or cut before their request was served, by reason "
        "(per-address-limit, request-timeout, reply-timeout, request-too-large, buffer-limit).")
REASONS = ("per-address-limit", "request-timeout", "reply-timeout", "request-too-large", "buffer-limit")

_lock = threading.Lock()
_counts: dict[str, int] = dict.fromkeys(REASONS, 0)


def count(reason: str) -> None:
    with _lock:
        _counts[reason] = _counts.get(reason, 0) + 1


def snapshot() -> dict[str, int]:
    """reason -> connections so far; every known reason is present, from 0."""
    with _lock:
        return dict(_counts)


def exposition() -> str:
    """The family in the text format, HELP and TYPE included."""
    lines = [f"# HELP {FAMILY} {HELP}\n", f"# TYPE {FAMILY} counter\n"]
    lines += [f'{FAMILY}{{reason="{reason}"}} {value}\n' for reason, value in sorted(snapshot().items())]
    return "".join(lines)
