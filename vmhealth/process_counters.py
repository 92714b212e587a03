"""Counters the servers keep outside their apps' own registries, shown in both servers' /metrics.

The gunicorn worker and the app run in one process (one worker per server), so a process-wide count
is what the exporter's and the webhook's /metrics report: the connections the worker refused or cut,
and the requests whose authentication failed. Failed authentication is also logged, at most once a
minute per route and address, with how many there were.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)
LOG_EVERY_SECONDS = 60.0


class ProcessCounter:
    """A counter family with labels, safe across threads; `preset` label sets exist from 0."""

    def __init__(self, family: str, help_text: str, labels: tuple[str, ...], preset: tuple[tuple[str, ...], ...] = ()):
        self.family, self.help, self.labels = family, help_text, labels
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, ...], int] = dict.fromkeys(preset, 0)

    def count(self, *values: str) -> None:
        with self._lock:
            self._counts[values] = self._counts.get(values, 0) + 1

    def snapshot(self) -> dict[tuple[str, ...], int]:
        with self._lock:
            return dict(self._counts)

    def samples(self) -> Iterator[str]:
        """The family's sample lines in the text format (label values are the code's own words)."""
        for values, value in sorted(self.snapshot().items()):
            labels = ",".join(f'{name}="{v}"' for name, v in zip(self.labels, values, strict=True))
            yield f"{self.family}{{{labels}}} {value}\n"


CONNECTIONS_REFUSED = ProcessCounter(
    "vmhealth_http_connections_refused_total",
    "Connections refused at accept or cut before their request was served, by reason "
    "(per-address-limit, request-timeout, reply-timeout, request-too-large, buffer-limit).",
    ("reason",),
    tuple((reason,) for reason in ("per-address-limit", "request-timeout", "reply-timeout", "request-too-large",
                                   "buffer-limit")))

AUTH_FAILURES = ProcessCounter(
    "vmhealth_http_auth_failures_total",
    "Requests refused for a missing or wrong credential, by route and reason (missing, wrong).",
    ("route", "reason"))

_auth_log_lock = threading.Lock()
_auth_log: dict[tuple[str, str], list[float]] = {}


def auth_failed(route: str, reason: str, address: str | None, what: str) -> None:
    """Count a failed authentication and log it, at most once a minute per route and address."""
    AUTH_FAILURES.count(route, reason)
    now = time.monotonic()
    key = (route, address or "?")
    with _auth_log_lock:
        entry = _auth_log.setdefault(key, [-LOG_EVERY_SECONDS, 0])
        entry[1] += 1
        if now - entry[0] < LOG_EVERY_SECONDS:
            return
        seen, entry[0], entry[1] = entry[1], now, 0
        if len(_auth_log) > 10_000:
            _auth_log.clear()
    log.warning("authentication failed on %s from %s: %s (%d in the last minute)", route, key[1], what, seen)
