"""Incidents, their attempts and the quarantine: one open incident per guest, each attempt claimed once.

An incident is opened by an INSERT guarded by a unique key (`open_key`) and every attempt is claimed
by a conditional UPDATE of its counter, so both hold across threads, processes and replicas on one
PostgreSQL; the fleet-wide limits are judged inside the claim, with every replica's claims serialised.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vmhealth.models.webhook import Action, AlertEvent, Incident, Quarantine

from .policy import Skip
from .sessions import NO_SYNC, Sessions

CLAIM_LOCK_KEY = 0x766D6865616C7468  # "vmhealth": the PostgreSQL advisory lock that serialises attempt claims


def open_key(cluster: str, vmid: int) -> str:
    return f"{cluster}/{vmid}"


def _unfinished(older_than: float) -> Any:
    """An attempt whose outcome is not known: interrupted (pending past the lease) or unknown."""
    return or_(Action.outcome == "unknown", and_(Action.outcome == "pending", Action.at < older_than))


class Incidents:
    """Each guest's incidents, the attempts made in them, and the guests quarantined after too many."""

    def __init__(self, db: Sessions):
        self.db = db

    def open_incident(self, event: AlertEvent, now: float) -> Incident | None:
        """The guest's open incident, opened for this event when there is none (unless it resolved)."""
        with self.db.tx() as session:
            return self.open_in(session, event, now)

    def open_in(self, session: Session, event: AlertEvent, now: float, load: bool = True) -> Incident | None:
        """The guest's open incident, opened for `event` unless the event's alert already resolved.

        One INSERT … ON CONFLICT (open_key) DO NOTHING: when the guest has an open incident (this
        process's or another replica's), nothing is written and that one is returned (with `load`)."""
        assert event.cluster is not None and event.vmid is not None
        key = open_key(event.cluster, event.vmid)
        resolved = session.scalar(select(AlertEvent.id).where(
            AlertEvent.fingerprint == event.fingerprint, AlertEvent.starts_at == event.starts_at,
            AlertEvent.status == "resolved"))
        if resolved is None:
            session.connection().execute(self._insert_incident, {
                "cluster": event.cluster, "vmid": event.vmid, "open_key": key, "fingerprint": event.fingerprint,
                "starts_at": event.starts_at, "alertname": event.alertname, "state": "open", "attempts": 0,
                "opened_at": now, "last_notified_at": now})
        if not load:
            return None
        return session.scalars(select(Incident).where(Incident.open_key == key)).first()

    @staticmethod
    def heard(session: Session, cluster: str, vmid: int, now: float) -> None:
        """A firing notification about the guest: its open incident is not silent (see `expire`)."""
        session.execute(update(Incident).where(Incident.open_key == open_key(cluster, vmid)).values(
            last_notified_at=now), execution_options=NO_SYNC)

    @functools.cached_property
    def _insert_incident(self) -> Any:
        """INSERT … ON CONFLICT (open_key) DO NOTHING: at most one open incident per guest, no savepoint."""
        table = Incident.__table__
        insert = postgresql_insert if self.db.postgres else sqlite_insert
        return insert(table).on_conflict_do_nothing(index_elements=[table.c.open_key])

    def incident(self, incident_id: int) -> Incident:
        with self.db.read() as session:
            return session.get_one(Incident, incident_id)

    def close_incident(self, incident_id: int, now: float) -> None:
        with self.db.tx() as session:
            session.execute(update(Incident).where(Incident.id == incident_id, Incident.state == "open").values(
                state="closed", open_key=None, closed_at=now))

    def open_incident_vmids(self, cluster: str) -> set[int]:
        """The guests of the cluster's open incidents (not manual resets'): the circuit breaker's candidates."""
        with self.db.read() as session:
            return set(session.scalars(select(Incident.vmid).where(
                Incident.cluster == cluster, Incident.state == "open", Incident.alertname != "manual")))

    def close(self, cluster: str, vmid: int, now: float, outcome: str, actor: str, reason: str,
              incident_id: int | None = None, event_id: int | None = None) -> int | None:
        """Close the guest's open incident (only if it is `incident_id`, when given) and write why.

        The history row (`outcome`, `actor`, `reason`) is committed with the closing; returns the id
        of the incident closed, or None when the guest had no such open incident."""
        with self.db.tx() as session:
            incident = session.scalars(select(Incident).where(Incident.open_key == open_key(cluster, vmid))).first()
            if incident is None or incident_id not in (None, incident.id):
                return None
            return self._close_in(session, incident, now, outcome, actor, reason, event_id)

    @staticmethod
    def _close_in(session: Session, incident: Incident, now: float, outcome: str, actor: str, reason: str,
                  event_id: int | None = None, silent_since: float | None = None) -> int | None:
        """The conditional closing and its history row; with `silent_since`, only if still silent since then."""
        query = update(Incident).where(Incident.id == incident.id, Incident.state == "open")
        if silent_since is not None:
            query = query.where(func.coalesce(Incident.last_notified_at, Incident.opened_at) <= silent_since)
        if not session.execute(query.values(state="closed", open_key=None, closed_at=now),
                               execution_options=NO_SYNC).rowcount:
            return None
        session.add(Action(at=now, cluster=incident.cluster, vmid=incident.vmid, fingerprint=incident.fingerprint,
                           event_id=event_id, incident_id=incident.id, outcome=outcome, actor=actor,
                           reason=reason[:2000], received_at=now))
        return incident.id

    def expire(self, now: float, after: float, limit: int = 500) -> list[Action]:
        """Close, as expired, open incidents with no notification for more than `after` seconds.

        Alertmanager sends a firing alert again every repeat_interval, so silence that long means its
        resolved notification was lost, or the alert never came from Alertmanager's rules at all. An
        incident with an attempt in flight waits for it. Returns the history rows written."""
        cutoff = now - after
        last = func.coalesce(Incident.last_notified_at, Incident.opened_at)
        busy = select(Action.incident_id).where(Action.outcome == "pending", Action.incident_id.is_not(None))
        closed: list[Action] = []
        with self.db.tx() as session:
            silent = session.scalars(select(Incident).where(
                Incident.state == "open", last < cutoff, Incident.id.not_in(busy)).order_by(Incident.id).limit(limit))
            for incident in silent.all():
                quiet = now - (incident.last_notified_at or incident.opened_at)
                reason = (f"expired: no notification for {quiet:.0f}s (webhook.policy.incident_expiry is {after:.0f}s);"
                          f" its resolved notification was lost or it never came from Alertmanager's rules")
                if self._close_in(session, incident, now, "closed:expired", "webhook", reason, silent_since=cutoff):
                    closed.append(Action(cluster=incident.cluster, vmid=incident.vmid, incident_id=incident.id,
                                         outcome="closed:expired", reason=reason))
        return closed

    def claim_attempt(self, incident: Incident, now: float, next_at: float, row: Action,
                      limits: Callable[[int, int], Skip | None] | None = None) -> Action | Skip | None:
        """Own attempt `incident.attempts + 1`: bump the counter if nobody did, and write its row first.

        `limits(in_flight, last_hour)` judges the fleet-wide limits inside the claim, with every replica's
        claims serialised (an advisory lock on PostgreSQL, the write lock on SQLite): a Skip from it is
        returned and nothing is claimed, so two replicas together never exceed max_concurrent_actions."""
        with self.db.tx() as session:
            if limits is not None:
                skip = limits(*self._slots_in(session, now))
                if skip is not None:
                    return skip
            won = session.execute(update(Incident).where(
                Incident.id == incident.id, Incident.state == "open", Incident.attempts == incident.attempts,
                or_(Incident.next_attempt_at.is_(None), Incident.next_attempt_at <= now),
            ).values(attempts=Incident.attempts + 1, last_attempt_at=now, next_attempt_at=next_at)).rowcount
            if not won:
                return None
            row.incident_id = incident.id
            row.attempt = incident.attempts + 1
            row.outcome = "pending"
            try:
                with session.begin_nested():
                    session.add(row)
            except IntegrityError:
                raise RuntimeError("attempt row exists although the counter was free") from None
        return row

    def _slots_in(self, session: Session, now: float) -> tuple[int, int]:
        """(actions in flight, actions in the last hour) of every replica, read after taking the claim lock."""
        if self.db.postgres:
            session.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK_KEY)))
        in_flight = session.scalar(select(func.count()).select_from(Action).where(Action.outcome == "pending"))
        last_hour = session.scalar(select(func.count()).select_from(Action).where(
            Action.attempt.is_not(None), Action.at >= now - 3600))
        return int(in_flight or 0), int(last_hour or 0)

    def interrupted_incidents(self, older_than: float) -> list[Incident]:
        """Incidents, open or closed, with an attempt still pending since before `older_than`."""
        stale = select(Action.incident_id).where(Action.outcome == "pending", Action.at < older_than,
                                                 Action.incident_id.is_not(None))
        with self.db.read() as session:
            return list(session.scalars(select(Incident).where(Incident.id.in_(stale))).all())

    def unfinished_attempts(self, incident_id: int, older_than: float) -> list[Action]:
        """Attempts whose outcome is not known: interrupted (pending past the lease) or unknown."""
        with self.db.read() as session:
            return list(session.scalars(select(Action).where(
                Action.incident_id == incident_id, _unfinished(older_than)).order_by(Action.id)).all())

    def attempts_of(self, incident_id: int) -> list[Action]:
        """The incident's attempts (the rows that touched or may have touched Proxmox), oldest first."""
        with self.db.read() as session:
            return list(session.scalars(select(Action).where(
                Action.incident_id == incident_id, Action.attempt.is_not(None)).order_by(Action.attempt)).all())

    @staticmethod
    def open_incidents_of(session: Session, rows: Sequence[AlertEvent], older_than: float) -> dict[str, Incident]:
        """The open incidents of the events' guests, by open_key, leaving out those with an attempt to settle."""
        keys = {open_key(row.cluster, row.vmid) for row in rows if row.cluster is not None and row.vmid is not None}
        if not keys:
            return {}
        found = {i.id: i for i in session.scalars(select(Incident).where(Incident.open_key.in_(keys)))}
        unsettled = set(session.scalars(select(Action.incident_id).where(
            Action.incident_id.in_(list(found)), _unfinished(older_than))))
        return {i.open_key: i for i in found.values() if i.id not in unsettled and i.open_key is not None}

    def quarantine(self, cluster: str, vmid: int, incident_id: int | None, attempts: int, reason: str,
                   now: float) -> None:
        with self.db.tx() as session:
            if session.get(Quarantine, (cluster, vmid)) is None:
                try:
                    with session.begin_nested():
                        session.add(Quarantine(cluster=cluster, vmid=vmid, since=now, incident_id=incident_id,
                                               attempts=attempts, reason=reason[:2000]))
                except IntegrityError:
                    pass

    def quarantined(self, cluster: str, vmid: int) -> Quarantine | None:
        with self.db.read() as session:
            return self.quarantined_in(session, cluster, vmid)

    @staticmethod
    def quarantined_in(session: Session, cluster: str, vmid: int) -> Quarantine | None:
        return session.get(Quarantine, (cluster, vmid))

    def release(self, cluster: str, vmid: int, actor: str, now: float) -> bool:
        """End a quarantine and the guest's open incident, so attempts start again from zero."""
        with self.db.tx() as session:
            found = session.get(Quarantine, (cluster, vmid))
            if found is None:
                return False
            session.delete(found)
            session.execute(update(Incident).where(Incident.open_key == open_key(cluster, vmid)).values(
                state="closed", open_key=None, closed_at=now))
            session.add(Action(at=now, cluster=cluster, vmid=vmid, incident_id=found.incident_id,
                               outcome="released", actor=actor, reason="quarantine ended by a person"))
        return True

    def all_quarantined(self) -> list[Quarantine]:
        with self.db.read() as session:
            return list(session.scalars(select(Quarantine)).all())

    def open_incident_attempts(self) -> list[tuple[str, int, int]]:
        """(cluster, vmid, attempts) of every open incident: plain columns, for each /metrics scrape."""
        with self.db.read() as session:
            return [(c, v, a) for c, v, a in session.execute(select(
                Incident.cluster, Incident.vmid, Incident.attempts).where(Incident.state == "open"))]
