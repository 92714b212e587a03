"""The queue of alert events: each alert of a notification recorded once, claimed by one worker, finished.

Every claim is a conditional UPDATE (`... WHERE state = 'pending'`) checked by its row count, so it
holds across threads, processes and replicas on one PostgreSQL; there the candidate rows are also
read with FOR UPDATE SKIP LOCKED so replicas do not queue behind each other.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from vmhealth.models.webhook import Action, AlertEvent, Incident

from .incidents import Incidents, open_key
from .payload import Alert, parse_time
from .sessions import NO_SYNC, RECORD_BUSY_SECONDS, Sessions


@dataclass
class Recorded:
    """What became of one alert of a notification."""

    event_id: int
    result: str  # recorded | duplicate | rearmed | ignored | resolved


# A policy refusal decided inside the claiming transaction: its history row and the event's retry_after.
Refuse = Callable[[Session, AlertEvent, Incident], tuple[Action, float | None] | None]


class EventQueue:
    """The alert events: recorded as they arrive, claimed and finished by the workers."""

    def __init__(self, db: Sessions, incidents: Incidents):
        self.db = db
        self.incidents = incidents

    def record(self, alerts: list[Alert], now: float, actor: str = "alertmanager", reason: str = "",
               force: bool = False) -> list[Recorded]:
        """Store each alert durably (one transaction); the caller replies only after this returns."""
        out: list[Recorded] = []
        with self.db.tx(RECORD_BUSY_SECONDS) as session:
            for alert in alerts:
                out.append(self._record_one(session, alert, now, actor, reason, force))
        return out

    def _record_one(self, session: Session, alert: Alert, now: float, actor: str, reason: str,
                    force: bool) -> Recorded:
        actionable = alert.status == "firing" and bool(alert.action)
        values = dict(
            fingerprint=alert.fingerprint, starts_at=alert.starts_at, status=alert.status,
            alertname=alert.alertname, cluster=alert.cluster, vmid=alert.vmid, node=alert.node, name=alert.name,
            action=alert.action, labels=json.dumps(alert.labels, sort_keys=True), actor=actor, reason=reason,
            force=force, received_at=now, deliveries=1, state="pending" if actionable else "done",
            result="" if actionable or alert.status == "resolved" else "no action label",
            evidence=json.dumps(alert.evidence, sort_keys=True) if alert.evidence else None,
        )
        # One statement, no savepoint: a key already stored (a repeat, or another replica's row
        # inserted meanwhile) returns no id and leaves the transaction usable.
        new_id = session.connection().execute(self._insert_event, values).scalar()
        if new_id is None:
            existing = session.scalars(select(AlertEvent).where(
                AlertEvent.fingerprint == alert.fingerprint, AlertEvent.starts_at == alert.starts_at,
                AlertEvent.status == alert.status)).one()
            # Every delivery carries the rules' latest evaluation: the event keeps the newest evidence.
            rearmed = session.execute(
                update(AlertEvent)
                .where(AlertEvent.id == existing.id, AlertEvent.state == "done",
                       AlertEvent.retry_after.is_not(None), AlertEvent.retry_after <= now)
                .values(state="pending", deliveries=AlertEvent.deliveries + 1, received_at=now,
                        evidence=values["evidence"])
            ).rowcount
            if not rearmed:
                session.execute(update(AlertEvent).where(AlertEvent.id == existing.id)
                                .values(deliveries=AlertEvent.deliveries + 1, evidence=values["evidence"]))
            if actionable and alert.cluster is not None and alert.vmid is not None:
                self.incidents.heard(session, alert.cluster, alert.vmid, now)
            return Recorded(existing.id, "rearmed" if rearmed else "duplicate")
        row = AlertEvent(id=new_id, **values)  # what was stored; not attached to the session
        if alert.status == "resolved":
            self._resolve(session, row, now)
            session.execute(update(AlertEvent).where(AlertEvent.id == new_id).values(result=row.result))
            return Recorded(new_id, "resolved")
        if not actionable:
            return Recorded(new_id, "ignored")
        if row.cluster is not None and row.vmid is not None:
            self.incidents.open_in(session, row, now, load=False)  # counted by the circuit breaker from now on
            self.incidents.heard(session, row.cluster, row.vmid, now)
        return Recorded(new_id, "recorded")

    @functools.cached_property
    def _insert_event(self) -> Any:
        """INSERT … ON CONFLICT (the event's key) DO NOTHING RETURNING id, built once (SQLite, PostgreSQL)."""
        table = AlertEvent.__table__
        insert = postgresql_insert if self.db.postgres else sqlite_insert
        return insert(table).on_conflict_do_nothing(
            index_elements=[table.c.fingerprint, table.c.starts_at, table.c.status]).returning(table.c.id)

    def _resolve(self, session: Session, row: AlertEvent, now: float) -> None:
        """Close the incident this resolved alert ends and drop its still-pending firing work."""
        session.execute(update(AlertEvent).where(
            AlertEvent.fingerprint == row.fingerprint, AlertEvent.starts_at == row.starts_at,
            AlertEvent.status == "firing", AlertEvent.state == "pending",
        ).values(state="done", result="resolved before it was acted on", retry_after=None))
        session.execute(update(AlertEvent).where(
            AlertEvent.fingerprint == row.fingerprint, AlertEvent.starts_at == row.starts_at,
            AlertEvent.status == "firing").values(retry_after=None))
        # The incident may have begun with an earlier instance of the same alert: Alertmanager never
        # reports an instance resolved when the alert fired again within one group interval, so this
        # later instance ending is what ends the incident. An older instance ending (late) does not.
        incident = session.scalars(select(Incident).where(
            Incident.state == "open", Incident.fingerprint == row.fingerprint)).first()
        row.result = "no open incident"
        if incident is None or parse_time(incident.starts_at) > parse_time(row.starts_at):
            return
        session.execute(update(Incident).where(Incident.id == incident.id).values(
            state="closed", open_key=None, closed_at=now))
        row.result = f"incident {incident.id} closed after {incident.attempts} attempt(s)"
        session.add(Action(
            at=now, cluster=incident.cluster, vmid=incident.vmid, node=row.node, name=row.name,
            fingerprint=row.fingerprint, event_id=row.id, incident_id=incident.id, outcome="resolved",
            actor="alertmanager", reason=row.result, received_at=now,
        ))

    def claim_or_refuse(self, worker: str, limit: int, now: float, lease: float, refuse: Refuse | None = None,
                        batch: int = 0) -> tuple[list[int], list[Action]]:
        """Claim up to `limit` events and, in the same transaction, decide up to `batch` that `refuse` refuses.

        The events are looked at oldest first. `refuse(session, event, incident)` is asked about an
        event whose guest has an open incident with no attempt left to settle; it returns the history
        row of a refusal that needs no Proxmox call (`outcome` and `error` set) and the event's
        `retry_after`, or None: that event is claimed for the pool, and once `limit` are claimed the
        look stops at the next such event, so none is overtaken by a later one. A refused event goes
        from claimable to done in one conditional update, its row written with it; both are committed
        together, before the caller counts the decision."""
        claimable = or_(AlertEvent.state == "pending",
                        and_(AlertEvent.state == "claimed", AlertEvent.claimed_at < now - lease))
        claimed: list[int] = []
        refused: list[Action] = []
        if limit <= 0 and (refuse is None or batch <= 0):
            return claimed, refused
        # The refusals' rows are inserted together at the commit (no autoflush): none of them is an
        # attempt, so no read of the batch (quarantine, last touch) depends on them.
        with self.db.tx() as session, session.no_autoflush:
            query = select(AlertEvent).where(claimable).order_by(AlertEvent.id).limit(limit + batch)
            if self.db.postgres:
                query = query.with_for_update(skip_locked=True)
            rows = session.scalars(query).all()
            incidents = self.incidents.open_incidents_of(session, rows, now - lease) if refuse is not None else {}
            for row in rows:
                incident = incidents.get(open_key(row.cluster or "", row.vmid or 0))
                refusal = None
                if refuse is not None and incident is not None and len(refused) < batch:
                    refusal = refuse(session, row, incident)
                if refusal is None:
                    if len(claimed) >= limit:
                        break
                    if self._claim(session, row.id, worker, now, claimable):
                        claimed.append(row.id)
                    continue
                action, retry_after = refusal
                done = session.execute(update(AlertEvent).where(AlertEvent.id == row.id, claimable).values(
                    state="done", claimed_by=worker, claimed_at=now, retry_after=retry_after,
                    result=f"{action.outcome}: {action.error}"[:2000]), execution_options=NO_SYNC).rowcount
                if done:
                    session.add(action)
                    refused.append(action)
        return claimed, refused

    def claim_event(self, event_id: int, worker: str, now: float, lease: float) -> bool:
        claimable = or_(AlertEvent.state == "pending",
                        and_(AlertEvent.state == "claimed", AlertEvent.claimed_at < now - lease))
        with self.db.tx() as session:
            return self._claim(session, event_id, worker, now, claimable)

    @staticmethod
    def _claim(session: Session, event_id: int, worker: str, now: float, claimable: Any) -> bool:
        return bool(session.execute(update(AlertEvent).where(AlertEvent.id == event_id, claimable).values(
            state="claimed", claimed_by=worker, claimed_at=now), execution_options=NO_SYNC).rowcount)

    def finish_event(self, event_id: int, worker: str, result: str, retry_after: float | None) -> None:
        with self.db.tx() as session:
            session.execute(update(AlertEvent).where(
                AlertEvent.id == event_id, AlertEvent.state == "claimed", AlertEvent.claimed_by == worker,
            ).values(state="done", result=result[:2000], retry_after=retry_after))

    def event(self, event_id: int) -> AlertEvent:
        with self.db.read() as session:
            return session.get_one(AlertEvent, event_id)

    def pending_events(self) -> int:
        with self.db.read() as session:
            return int(session.scalar(select(func.count()).select_from(AlertEvent).where(
                AlertEvent.state.in_(("pending", "claimed")))) or 0)
