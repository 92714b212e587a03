"""The worker: claims pending events from the database and runs each decision in a bounded pool.

The database is the queue, so a restarted process, or another replica, finds the same work; the
pool never holds more than `max_concurrent_actions` events, the rest wait in the table. Events the
policy refuses from the database alone (kill switch, quarantine, attempts used up, cooldown) are
decided in bulk while claiming, without taking the pool's turns. The
receiver wakes the worker at once; a periodic look also picks up events whose claimer died, and a
second thread settles attempts a dead process left pending (their alert may have resolved since) and
closes incidents that heard from Alertmanager for longer than webhook.policy.incident_expiry.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy.exc import SQLAlchemyError

from . import retention
from .database import WebhookDatabase
from .remediate import Decision, Remediator

PRUNE_INTERVAL = 3600.0  # history retention: how often old rows are looked for

log = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _retry_later(what: str, exc: Exception, seconds: float) -> None:
    """One line while the database is away (it is retried every few seconds), a traceback otherwise."""
    if isinstance(exc, SQLAlchemyError):
        log.warning("%s: database unavailable (%s); trying again in %.0fs", what, str(exc).splitlines()[0], seconds)
    else:
        log.exception("%s failed; trying again in %.0fs", what, seconds)


class Worker:
    """A thread that feeds a bounded thread pool from the event table."""

    def __init__(self, store: WebhookDatabase, remediator: Remediator, size: int, lease: float, poll: float = 2.0):
        self.store = store
        self.remediator = remediator
        self.size = size
        self.lease = lease
        self.poll = poll
        self.id = worker_id()
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="vmhealth-remediate")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: set[Future[None]] = set()
        self._claiming = 0  # 1 while a claim (and the counting of its refusals) is under way
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="vmhealth-worker", daemon=True)
        expiry = float(remediator.incident_expiry)
        self.sweep_interval = max(poll, min(lease / 2, expiry / 2, 30.0))
        self._sweeper = threading.Thread(target=self._sweep, name="vmhealth-settle", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._sweeper.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._sweeper.is_alive():
            self._sweeper.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def busy(self) -> int:
        """Events being decided here: those in the pool, plus a claim in progress (its refusals are
        committed before they are counted in the metrics)."""
        with self._lock:
            return len(self._inflight) + self._claiming

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                free = self.size - self.busy()
                with self._lock:
                    self._claiming = 1
                try:
                    claimed, refused = self.remediator.claim(self.id, free, time.time())
                    for event_id in claimed:
                        self._submit(event_id)
                finally:
                    with self._lock:
                        self._claiming = 0
                if refused:
                    continue  # look again at once: more refusals may be waiting
            except Exception as exc:
                _retry_later("claiming alert events", exc, self.poll)
            self._wake.wait(self.poll)

    def _sweep(self) -> None:
        """Apart from the claim loop: following a found task may take up to `task_timeout`. Silent
        incidents expire here too, and the history's retention runs here once an hour, in small batches."""
        next_prune = 0.0
        while not self._stop.wait(self.sweep_interval):
            try:
                self.remediator.expire_incidents(time.time())
            except Exception as exc:
                _retry_later("expiring silent incidents", exc, self.sweep_interval)
            try:
                self.remediator.settle_interrupted(time.time())
            except Exception as exc:
                _retry_later("settling interrupted attempts", exc, self.sweep_interval)
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_INTERVAL
                try:
                    retention.prune(self.store, float(self.remediator.webhook.history_retention), time.time())
                except Exception as exc:
                    _retry_later("deleting history older than webhook.history_retention", exc, PRUNE_INTERVAL)

    def _submit(self, event_id: int) -> None:
        future = self._pool.submit(self.run_one, event_id)
        with self._lock:
            self._inflight.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._inflight.discard(future)
        self._wake.set()

    def run_one(self, event_id: int) -> Decision | None:
        """Decide on one claimed event and mark it done (also used inline by the manual API)."""
        try:
            decision = self.remediator.process(self.store.queue.event(event_id))
        except Exception:
            # Left claimed: once the lease runs out, any worker takes it again.
            log.exception("alert event %s failed; it is taken up again after the claim lease", event_id)
            return None
        try:
            self.store.queue.finish_event(event_id, self.id, f"{decision.outcome}: {decision.detail}",
                                    decision.retry_after)
        except Exception:
            # The decision and its history row are written; only the event stays claimed, and the next
            # look at it meets the attempt already taken (cooldown), so nothing is done twice.
            log.exception("could not mark alert event %s done", event_id)
        return decision

    def drain(self, timeout: float) -> bool:
        """Wait until no event is pending or running here (for tests and shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Pending first: an event leaves the table before it leaves busy() (counted, callback run).
            if self.store.queue.pending_events() == 0 and self.busy() == 0:
                return True
            self._wake.set()
            time.sleep(0.02)
        return False
