"""The webhook's database work: record events, claim work and attempts, write the history.

Every claim is a conditional UPDATE (`... WHERE state = 'pending'`) or an INSERT guarded by a unique
constraint, checked by its row count or IntegrityError, so it holds across threads, processes and
replicas on one PostgreSQL; on PostgreSQL the candidate rows are also read with FOR UPDATE SKIP
LOCKED so replicas do not queue behind each other. SQLite write transactions begin IMMEDIATE: SQLite
serialises writers anyway, and this keeps a read-then-write transaction from failing half-way. Reads
begin DEFERRED, so that in WAL mode the history and /metrics stay readable while another connection
holds the write lock; and recording a notification waits only RECORD_BUSY_SECONDS for that lock,
so Alertmanager gets its 503 (and retries) well before its own delivery timeout of at least 10 s.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, event, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from vmhealth.models.webhook import Action, AlertEvent, Incident, Quarantine
from vmhealth.webhook.payload import Alert, parse_time
from vmhealth.webhook.policy import Skip

CLAIM_LOCK_KEY = 0x766D6865616C7468  # "vmhealth": the PostgreSQL advisory lock that serialises attempt claims
READ = -1.0  # the _BEGIN mode of a read-only session: a plain (deferred) BEGIN
RECORD_BUSY_SECONDS = 5.0  # how long recording a notification waits for SQLite's write lock
WRITE_BUSY_SECONDS = 30.0  # other writes (the worker's, migrations): nobody waits for them
# Conditional updates of rows the session may hold: the database decides by the row count, and the
# loaded objects are not used afterwards, so they are not matched against the criteria in Python.
_NO_SYNC = {"synchronize_session": False}
_BEGIN: ContextVar[float] = ContextVar("vmhealth_sqlite_begin", default=WRITE_BUSY_SECONDS)


def _sqlite_immediate(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection):  # type: ignore[no-untyped-def]
        busy = _BEGIN.get()
        if busy == READ:
            connection.exec_driver_sql("BEGIN")
            return
        connection.exec_driver_sql(f"PRAGMA busy_timeout={int(busy * 1000)}")
        connection.exec_driver_sql("BEGIN IMMEDIATE")


@dataclass
class Recorded:
    """What became of one alert of a notification."""

    event_id: int
    result: str  # recorded | duplicate | rearmed | ignored | resolved


# A policy refusal decided inside the claiming transaction: its history row and the event's retry_after.
Refuse = Callable[[Session, AlertEvent, Incident], tuple[Action, float | None] | None]


def open_key(cluster: str, vmid: int) -> str:
    return f"{cluster}/{vmid}"


def _unfinished(older_than: float) -> Any:
    """An attempt whose outcome is not known: interrupted (pending past the lease) or unknown."""
    return or_(Action.outcome == "unknown", and_(Action.outcome == "pending", Action.at < older_than))


class Store:
    """Database access for one webhook process (thread-safe: a session per call)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        if engine.dialect.name == "sqlite":
            _sqlite_immediate(engine)
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def tx(self, busy: float = WRITE_BUSY_SECONDS) -> Iterator[Session]:
        """A write transaction; on SQLite it waits up to `busy` seconds for the write lock."""
        token = _BEGIN.set(busy)
        try:
            with self.sessions() as session, session.begin():
                yield session
        finally:
            _BEGIN.reset(token)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session; on SQLite (WAL) it does not wait for another connection's write lock."""
        token = _BEGIN.set(READ)
        try:
            with self.sessions() as session:
                yield session
        finally:
            _BEGIN.reset(token)

    # --- receiving -------------------------------------------------------------------------------
    def record(self, alerts: list[Alert], now: float, actor: str = "alertmanager", reason: str = "",
               force: bool = False) -> list[Recorded]:
        """Store each alert durably (one transaction); the caller replies only after this returns."""
        out: list[Recorded] = []
        with self.tx(RECORD_BUSY_SECONDS) as session:
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
                self._heard(session, alert.cluster, alert.vmid, now)
            return Recorded(existing.id, "rearmed" if rearmed else "duplicate")
        row = AlertEvent(id=new_id, **values)  # what was stored; not attached to the session
        if alert.status == "resolved":
            self._resolve(session, row, now)
            session.execute(update(AlertEvent).where(AlertEvent.id == new_id).values(result=row.result))
            return Recorded(new_id, "resolved")
        if not actionable:
            return Recorded(new_id, "ignored")
        if row.cluster is not None and row.vmid is not None:
            self._open(session, row, now, load=False)  # counted by the circuit breaker from now on
            self._heard(session, row.cluster, row.vmid, now)
        return Recorded(new_id, "recorded")

    @staticmethod
    def _heard(session: Session, cluster: str, vmid: int, now: float) -> None:
        """A firing notification about the guest: its open incident is not silent (see `expire`)."""
        session.execute(update(Incident).where(Incident.open_key == open_key(cluster, vmid)).values(
            last_notified_at=now), execution_options=_NO_SYNC)

    @functools.cached_property
    def _insert_event(self) -> Any:
        """INSERT … ON CONFLICT (the event's key) DO NOTHING RETURNING id, built once (SQLite, PostgreSQL)."""
        table = AlertEvent.__table__
        insert = postgresql_insert if self.postgres else sqlite_insert
        return insert(table).on_conflict_do_nothing(
            index_elements=[table.c.fingerprint, table.c.starts_at, table.c.status]).returning(table.c.id)

    @functools.cached_property
    def _insert_incident(self) -> Any:
        """INSERT … ON CONFLICT (open_key) DO NOTHING: at most one open incident per guest, no savepoint."""
        table = Incident.__table__
        insert = postgresql_insert if self.postgres else sqlite_insert
        return insert(table).on_conflict_do_nothing(index_elements=[table.c.open_key])

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

    # --- the work queue --------------------------------------------------------------------------
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
        with self.tx() as session, session.no_autoflush:
            query = select(AlertEvent).where(claimable).order_by(AlertEvent.id).limit(limit + batch)
            if self.postgres:
                query = query.with_for_update(skip_locked=True)
            rows = session.scalars(query).all()
            incidents = self._open_incidents_of(session, rows, now - lease) if refuse is not None else {}
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
                    result=f"{action.outcome}: {action.error}"[:2000]), execution_options=_NO_SYNC).rowcount
                if done:
                    session.add(action)
                    refused.append(action)
        return claimed, refused

    @staticmethod
    def _open_incidents_of(session: Session, rows: Sequence[AlertEvent], older_than: float) -> dict[str, Incident]:
        """The open incidents of the events' guests, by open_key, leaving out those with an attempt to settle."""
        keys = {open_key(row.cluster, row.vmid) for row in rows if row.cluster is not None and row.vmid is not None}
        if not keys:
            return {}
        found = {i.id: i for i in session.scalars(select(Incident).where(Incident.open_key.in_(keys)))}
        unsettled = set(session.scalars(select(Action.incident_id).where(
            Action.incident_id.in_(list(found)), _unfinished(older_than))))
        return {i.open_key: i for i in found.values() if i.id not in unsettled and i.open_key is not None}

    def claim_event(self, event_id: int, worker: str, now: float, lease: float) -> bool:
        claimable = or_(AlertEvent.state == "pending",
                        and_(AlertEvent.state == "claimed", AlertEvent.claimed_at < now - lease))
        with self.tx() as session:
            return self._claim(session, event_id, worker, now, claimable)

    @staticmethod
    def _claim(session: Session, event_id: int, worker: str, now: float, claimable: Any) -> bool:
        return bool(session.execute(update(AlertEvent).where(AlertEvent.id == event_id, claimable).values(
            state="claimed", claimed_by=worker, claimed_at=now), execution_options=_NO_SYNC).rowcount)

    def finish_event(self, event_id: int, worker: str, result: str, retry_after: float | None) -> None:
        with self.tx() as session:
            session.execute(update(AlertEvent).where(
                AlertEvent.id == event_id, AlertEvent.state == "claimed", AlertEvent.claimed_by == worker,
            ).values(state="done", result=result[:2000], retry_after=retry_after))

    def event(self, event_id: int) -> AlertEvent:
        with self.read() as session:
            return session.get_one(AlertEvent, event_id)

    def pending_events(self) -> int:
        with self.read() as session:
            return int(session.scalar(select(func.count()).select_from(AlertEvent).where(
                AlertEvent.state.in_(("pending", "claimed")))) or 0)

    # --- incidents -------------------------------------------------------------------------------
    def open_incident(self, event: AlertEvent, now: float) -> Incident | None:
        """The guest's open incident, opened for this event when there is none (unless it resolved)."""
        with self.tx() as session:
            return self._open(session, event, now)

    def _open(self, session: Session, event: AlertEvent, now: float, load: bool = True) -> Incident | None:
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

    def incident(self, incident_id: int) -> Incident:
        with self.read() as session:
            return session.get_one(Incident, incident_id)

    def close_incident(self, incident_id: int, now: float) -> None:
        with self.tx() as session:
            session.execute(update(Incident).where(Incident.id == incident_id, Incident.state == "open").values(
                state="closed", open_key=None, closed_at=now))

    def open_incident_vmids(self, cluster: str) -> set[int]:
        """The guests of the cluster's open incidents (not manual resets'): the circuit breaker's candidates."""
        with self.read() as session:
            return set(session.scalars(select(Incident.vmid).where(
                Incident.cluster == cluster, Incident.state == "open", Incident.alertname != "manual")))

    def close(self, cluster: str, vmid: int, now: float, outcome: str, actor: str, reason: str,
              incident_id: int | None = None, event_id: int | None = None) -> int | None:
        """Close the guest's open incident (only if it is `incident_id`, when given) and write why.

        The history row (`outcome`, `actor`, `reason`) is committed with the closing; returns the id
        of the incident closed, or None when the guest had no such open incident."""
        with self.tx() as session:
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
                               execution_options=_NO_SYNC).rowcount:
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
        with self.tx() as session:
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
        with self.tx() as session:
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
        if self.postgres:
            session.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK_KEY)))
        in_flight = session.scalar(select(func.count()).select_from(Action).where(Action.outcome == "pending"))
        last_hour = session.scalar(select(func.count()).select_from(Action).where(
            Action.attempt.is_not(None), Action.at >= now - 3600))
        return int(in_flight or 0), int(last_hour or 0)

    def interrupted_incidents(self, older_than: float) -> list[Incident]:
        """Incidents, open or closed, with an attempt still pending since before `older_than`."""
        stale = select(Action.incident_id).where(Action.outcome == "pending", Action.at < older_than,
                                                 Action.incident_id.is_not(None))
        with self.read() as session:
            return list(session.scalars(select(Incident).where(Incident.id.in_(stale))).all())

    def unfinished_attempts(self, incident_id: int, older_than: float) -> list[Action]:
        """Attempts whose outcome is not known: interrupted (pending past the lease) or unknown."""
        with self.read() as session:
            return list(session.scalars(select(Action).where(
                Action.incident_id == incident_id, _unfinished(older_than)).order_by(Action.id)).all())

    def attempts_of(self, incident_id: int) -> list[Action]:
        """The incident's attempts (the rows that touched or may have touched Proxmox), oldest first."""
        with self.read() as session:
            return list(session.scalars(select(Action).where(
                Action.incident_id == incident_id, Action.attempt.is_not(None)).order_by(Action.attempt)).all())

    # --- quarantine ------------------------------------------------------------------------------
    def quarantine(self, cluster: str, vmid: int, incident_id: int | None, attempts: int, reason: str,
                   now: float) -> None:
        with self.tx() as session:
            if session.get(Quarantine, (cluster, vmid)) is None:
                try:
                    with session.begin_nested():
                        session.add(Quarantine(cluster=cluster, vmid=vmid, since=now, incident_id=incident_id,
                                               attempts=attempts, reason=reason[:2000]))
                except IntegrityError:
                    pass

    def quarantined(self, cluster: str, vmid: int) -> Quarantine | None:
        with self.read() as session:
            return self.quarantined_in(session, cluster, vmid)

    @staticmethod
    def quarantined_in(session: Session, cluster: str, vmid: int) -> Quarantine | None:
        return session.get(Quarantine, (cluster, vmid))

    def release(self, cluster: str, vmid: int, actor: str, now: float) -> bool:
        """End a quarantine and the guest's open incident, so attempts start again from zero."""
        with self.tx() as session:
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
        with self.read() as session:
            return list(session.scalars(select(Quarantine)).all())

    def open_incident_attempts(self) -> list[tuple[str, int, int]]:
        """(cluster, vmid, attempts) of every open incident: plain columns, for each /metrics scrape."""
        with self.read() as session:
            return [(c, v, a) for c, v, a in session.execute(select(
                Incident.cluster, Incident.vmid, Incident.attempts).where(Incident.state == "open"))]

    # --- history ---------------------------------------------------------------------------------
    def add(self, row: Action) -> Action:
        with self.tx() as session:
            session.add(row)
        return row

    def update_action(self, action_id: int, **values: Any) -> None:
        with self.tx() as session:
            session.execute(update(Action).where(Action.id == action_id).values(**values))

    def actions_since(self, since: float) -> int:
        """Actions that touched (or may have touched) Proxmox since `since`, every replica's."""
        with self.read() as session:
            return int(session.scalar(select(func.count()).select_from(Action).where(
                Action.attempt.is_not(None), Action.at >= since)) or 0)

    def in_flight(self) -> int:
        with self.read() as session:
            return int(session.scalar(select(func.count()).select_from(Action).where(
                Action.outcome == "pending")) or 0)

    def last_touch(self, cluster: str, vmid: int) -> Action | None:
        """The guest's last action that touched Proxmox, in any incident (for the post-reset grace)."""
        with self.read() as session:
            return self.last_touch_in(session, cluster, vmid)

    @staticmethod
    def last_touch_in(session: Session, cluster: str, vmid: int) -> Action | None:
        return session.scalars(select(Action).where(
            Action.cluster == cluster, Action.vmid == vmid, Action.attempt.is_not(None),
        ).order_by(Action.at.desc()).limit(1)).first()

    def history(self, cluster: str | None = None, vmid: int | None = None, since: float | None = None,
                outcome: str | None = None, limit: int = 100, before_id: int | None = None,
                until: float | None = None) -> list[Action]:
        """Newest first; `before_id` continues a page."""
        query = select(Action).order_by(Action.id.desc()).limit(limit)
        if cluster:
            query = query.where(Action.cluster == cluster)
        if vmid is not None:
            query = query.where(Action.vmid == vmid)
        if since is not None:
            query = query.where(Action.at >= since)
        if until is not None:
            query = query.where(Action.at < until)
        if outcome:
            query = query.where(Action.outcome.startswith(outcome, autoescape=True) if outcome.endswith(":")
                                or outcome == "skipped" else Action.outcome == outcome)
        if before_id is not None:
            query = query.where(Action.id < before_id)
        with self.read() as session:
            return list(session.scalars(query).all())


def now() -> float:
    return time.time()
