"""History retention: old decisions, alert events and closed incidents are deleted in small batches.

Without it the database grows without bound: one 3.7 MB notification is 20,000 event rows, and a
leaked token can send one a second. Decisions (`webhook_action`) are kept for
`webhook.history_retention` (90 days by default, at least a day, so the hourly rate limit and the
cooldowns always see every recent attempt). Alert events that led to no decision (duplicates,
resolved notifications, alerts without an action) carry no history of their own and go after
`NO_DECISION_RETENTION` (7 days) or the retention, whichever is shorter. Closed incidents go with
their decisions. Pending events, open incidents and quarantines are never deleted.

Each batch is one short transaction of at most `BATCH` rows, with a pause between batches, so that
a decision waiting for the write lock waits for one batch at most; it runs on the worker's sweep
thread, never on the path of a decision.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import Select, delete, exists, select

from vmhealth.models.webhook import Action, AlertEvent, Incident

from .database import WebhookDatabase

log = logging.getLogger(__name__)
NO_DECISION_RETENTION = 7 * 86400.0
BATCH = 500
PAUSE_SECONDS = 0.05


@dataclass
class Pruned:
    decisions: int = 0
    events: int = 0
    incidents: int = 0

    def __bool__(self) -> bool:
        return bool(self.decisions or self.events or self.incidents)


def prune(store: WebhookDatabase, retention: float, now: float, batch: int = BATCH,
          pause: float = PAUSE_SECONDS) -> Pruned:
    """Delete what is older than the retention (see the module doc); returns how many rows of each."""
    cutoff = now - retention
    quiet_cutoff = now - min(retention, NO_DECISION_RETENTION)
    pruned = Pruned()
    pruned.decisions = _delete(store, Action, select(Action.id).where(Action.at < cutoff), batch, pause)
    unreferenced_event = ~exists().where(Action.event_id == AlertEvent.id)
    pruned.events = _delete(store, AlertEvent, select(AlertEvent.id).where(
        AlertEvent.state == "done", AlertEvent.received_at < quiet_cutoff, unreferenced_event), batch, pause)
    unreferenced_incident = ~exists().where(Action.incident_id == Incident.id)
    pruned.incidents = _delete(store, Incident, select(Incident.id).where(
        Incident.state == "closed", Incident.closed_at < cutoff, unreferenced_incident), batch, pause)
    if pruned:
        log.info("history retention: deleted %d decision(s), %d alert event(s) and %d incident(s) older than the "
                 "retention", pruned.decisions, pruned.events, pruned.incidents)
    return pruned


def _delete(store: WebhookDatabase, model: type, ids: Select, batch: int, pause: float) -> int:
    total = 0
    while True:
        with store.tx() as session:
            chosen = list(session.scalars(ids.order_by(model.id).limit(batch)))
            if chosen:
                session.execute(delete(model).where(model.id.in_(chosen)))
        total += len(chosen)
        if len(chosen) < batch:
            return total
        time.sleep(pause)
