"""History retention: what is deleted, what is kept, in batches, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from vmhealth.config import ConfigError, load
from vmhealth.db import make_engine, upgrade
from vmhealth.models.webhook import Action, AlertEvent, Incident, Quarantine
from vmhealth.webhook.database import WebhookDatabase
from vmhealth.webhook.retention import prune

DAY = 86400.0


def event(session, received: float, state: str = "done", n: int = 0) -> AlertEvent:
    row = AlertEvent(fingerprint=f"fp{n}-{received}", starts_at=f"{received}", status="firing", alertname="VMHung",
                     cluster="lab", vmid=100 + n, received_at=received, state=state)
    session.add(row)
    session.flush()
    return row


def incident(session, opened: float, closed: float | None, n: int = 0) -> Incident:
    row = Incident(cluster="lab", vmid=100 + n, opened_at=opened, closed_at=closed,
                   state="closed" if closed else "open", open_key=None if closed else f"lab/{100 + n}/{opened}")
    session.add(row)
    session.flush()
    return row


def count(store: WebhookDatabase, model: type) -> int:
    with store.read() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_old_rows_go_in_batches_and_what_is_recent_or_still_open_stays(database: str) -> None:
    engine = make_engine(database)
    upgrade(engine, "webhook")
    store = WebhookDatabase(engine)
    now = time.time()
    old, recent = now - 100 * DAY, now - 3 * DAY
    with store.tx() as session:
        for n in range(7):  # 7 old decisions, each with its event and its closed incident
            e, i = event(session, old, n=n), incident(session, old, old + 60, n=n)
            session.add(Action(at=old, cluster="lab", vmid=100 + n, event_id=e.id, incident_id=i.id, outcome="success"))
        kept_event = event(session, recent, n=50)
        kept_incident = incident(session, recent, recent + 60, n=50)
        session.add(Action(at=recent, cluster="lab", vmid=150, event_id=kept_event.id, incident_id=kept_incident.id,
                           outcome="skipped:cooldown"))
        quiet_old = event(session, now - 8 * DAY, n=60)  # led to no decision: gone after 7 days
        quiet_recent = event(session, now - 6 * DAY, n=61)  # not yet
        pending = event(session, old, state="pending", n=62)  # never deleted
        still_open = incident(session, old, None, n=63)  # never deleted
        session.add(Quarantine(cluster="lab", vmid=163, since=old, attempts=3, reason="old"))
    pruned = prune(store, 90 * DAY, now, batch=3, pause=0)
    assert (pruned.decisions, pruned.events, pruned.incidents) == (7, 8, 7)
    with store.read() as session:
        assert [a.at for a in session.scalars(select(Action))] == [recent]
        assert {e.id for e in session.scalars(select(AlertEvent))} == {kept_event.id, quiet_recent.id, pending.id}
        assert {i.id for i in session.scalars(select(Incident))} == {kept_incident.id, still_open.id}
    assert count(store, Quarantine) == 1 and quiet_old.id not in (kept_event.id, quiet_recent.id)
    assert not prune(store, 90 * DAY, now)  # nothing left to delete
    engine.dispose()


def test_a_retention_under_a_day_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load(raw={"webhook": {"history_retention": "2h"}}, environ={})
    assert "webhook.history_retention: at least 1d" in caught.value.problems[0]
    assert load(raw={}, environ={}).webhook.history_retention == 90 * DAY
