"""Each report to every exporter of a pair (or more), none waiting on another.

One thread per exporter URL holds the newest report and sends it; the collecting loop only hands
reports over and never blocks on the network. So a dead or slow exporter costs its own thread its own
timeout and backoff, while the others keep their interval. A thread that is still busy when the next
report arrives sends only the newest one afterwards: reports never queue up behind a slow exporter.
"""

from __future__ import annotations

import random
import threading
from typing import Any

from .push import Pusher, next_delay


class Sender:
    """The thread that sends reports to one exporter: the newest report on arrival, and after a transient
    failure the same report again with backoff (a newer report, when it comes first, goes instead)."""

    def __init__(self, pusher: Pusher, interval: float, stop: threading.Event, rng: random.Random) -> None:
        self.pusher = pusher
        self.interval = interval
        self.stop = stop
        self.rng = rng
        self.latest: dict[str, Any] | None = None
        self.fresh = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"push {pusher.url}", daemon=True)

    def offer(self, report: dict[str, Any]) -> None:
        self.latest = report
        self.fresh.set()

    def _run(self) -> None:
        retry: float | None = None  # None: wait for the next report; else seconds until the retry
        while True:
            self.fresh.wait(retry)
            if self.stop.is_set():
                return
            self.fresh.clear()
            report = self.latest
            if report is None:
                continue
            outcome = self.pusher.send(report)
            retry = (next_delay(self.interval, outcome, self.pusher.failures_in_row, self.rng)
                     if outcome.transient else None)


class Fanout:
    """A Sender per exporter, started together and stopped together."""

    def __init__(self, pushers: list[Pusher], interval: float, rng: random.Random) -> None:
        self.stop = threading.Event()
        self.senders = [Sender(pusher, interval, self.stop, rng) for pusher in pushers]

    def start(self) -> None:
        for sender in self.senders:
            sender.thread.start()

    def offer(self, report: dict[str, Any]) -> None:
        for sender in self.senders:
            sender.offer(report)

    def close(self, timeout: float = 5.0) -> None:
        """Stop every sender; one in the middle of a request ends when its timeout does (it is a daemon
        thread, so waiting is bounded here)."""
        self.stop.set()
        for sender in self.senders:
            sender.fresh.set()
        for sender in self.senders:
            sender.thread.join(timeout)
