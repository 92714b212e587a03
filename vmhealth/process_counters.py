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
    "(per-address-limit, request-timeout, reply-timeout, request-too-large, buffer-limit, tls-handshake).",
    ("reason",),
    tuple((reason,) for reason in ("per-address-limit", "request-timeout", "reply-timeout", "request-too-large",
                                   "buffer-limit", "tls-handshake")))

AUTH_FAILURES = ProcessCounter(
    "vmhealth_http_auth_failures_total",
    "Requests refused for a missing or wrong credential, by route and reason (missing, wrong).",
    ("route", "reason"))

AUTH_THROTTLED = ProcessCounter(
    "vmhealth_http_auth_throttled_total",
    "Refused authentications slowed down because their address failed repeatedly, by route and result "
    "(delayed: answered after a pause; refused: 429 with Retry-After).",
    ("route", "result"))

# Every family above, in the order both servers' /metrics show them.
PROCESS_COUNTERS = (CONNECTIONS_REFUSED, AUTH_FAILURES, AUTH_THROTTLED)


class OncePerMinute:
    """Events counted per key, to be logged at most once a minute per key with how many there were:
    a client that fails a thousand times a second writes one line a minute. Bounded: past `max_keys`
    keys the counts start again."""

    def __init__(self, seconds: float = LOG_EVERY_SECONDS, max_keys: int = 10_000):
        self.seconds, self.max_keys = seconds, max_keys
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, ...], list[float]] = {}  # key -> [last logged, count since]

    def due(self, key: tuple[str, ...]) -> int:
        """Count one event; the events to log now (this one included), or 0 when a line was written lately."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.setdefault(key, [now - self.seconds, 0])
            entry[1] += 1
            if now - entry[0] < self.seconds:
                return 0
            seen, entry[0], entry[1] = int(entry[1]), now, 0
            if len(self._entries) > self.max_keys:
                self._entries.clear()
            return seen


_auth_log = OncePerMinute()


def auth_failed(route: str, reason: str, address: str | None, what: str) -> None:
    """Count a failed authentication and log it, at most once a minute per route and address."""
    AUTH_FAILURES.count(route, reason)
    seen = _auth_log.due((route, address or "?"))
    if seen:
        log.warning("authentication failed on %s from %s: %s (%d in the last minute)", route, address or "?", what,
                    seen)
