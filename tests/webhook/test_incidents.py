"""Incidents end even when no resolved notification comes: the store's closing and expiry (SQLite and
PostgreSQL), the circuit breaker's count of running guests, and one /cluster/resources read per
notification. The end-to-end cases, with the real webhook process and the simulator, are in
test_webhook_ghosts.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from tests.helpers.webhook import firing
from vmhealth.db import make_engine, upgrade
from vmhealth.models.webhook import Action, Incident
from vmhealth.pve import PveError
from vmhealth.webhook import policy
from vmhealth.webhook.database import WebhookDatabase
from vmhealth.webhook.payload import parse_notification
from vmhealth.webhook.remediate import NotificationReads

T0 = 1_800_000_000.0


@pytest.fixture
def store(database: str) -> Iterator[WebhookDatabase]:
    engine = make_engine(database)
    upgrade(engine, "webhook")
    try:
        yield WebhookDatabase(engine)
    finally:
        engine.dispose()


def alert(vmid: int, **kwargs: Any) -> Any:
    return parse_notification(firing(vmid, **kwargs), "lab").alerts[0]


def rows(store: WebhookDatabase, vmid: int) -> list[Action]:
    with store.read() as session:
        return list(session.scalars(select(Action).where(Action.vmid == vmid).order_by(Action.id)))


def open_incidents(store: WebhookDatabase) -> list[tuple[str, int]]:
    return sorted((c, v) for c, v, _ in store.incidents.open_incident_attempts())


def test_a_silent_incident_expires_with_its_reason_and_a_notification_keeps_it_open(store: WebhookDatabase) -> None:
    store.queue.record([alert(100), alert(101)], T0)
    assert store.incidents.expire(T0 + 900, 900) == []  # not longer than the expiry yet
    store.queue.record([alert(101)], T0 + 600)  # Alertmanager's repeat: a duplicate, but news of the incident
    closed = store.incidents.expire(T0 + 901, 900)
    assert [(r.vmid, r.outcome) for r in closed] == [(100, "closed:expired")]
    assert open_incidents(store) == [("lab", 101)]
    [row] = rows(store, 100)
    assert (row.outcome, row.actor, row.incident_id) == ("closed:expired", "webhook", closed[0].incident_id)
    assert row.reason.startswith("expired: no notification for 901s (webhook.policy.incident_expiry is 900s)")
    assert [r.vmid for r in store.incidents.expire(T0 + 1501, 900)] == [101]
    assert open_incidents(store) == [] and store.incidents.expire(T0 + 9999, 900) == []  # closed once


def test_an_incident_with_an_attempt_in_flight_waits_for_it(store: WebhookDatabase) -> None:
    store.queue.record([alert(100)], T0)
    [incident_id] = _open_ids(store)
    with store.read() as session:
        incident = session.get_one(Incident, incident_id)
    row = Action(at=T0 + 1, cluster="lab", vmid=100)
    assert store.incidents.claim_attempt(incident, T0 + 1, T0 + 600, row) is not None
    assert store.incidents.expire(T0 + 2000, 900) == []
    store.history.update_action(rows(store, 100)[0].id, outcome="success")
    assert len(store.incidents.expire(T0 + 2000, 900)) == 1


def _open_ids(store: WebhookDatabase) -> list[int]:
    with store.read() as session:
        return list(session.scalars(select(Incident.id).where(Incident.state == "open")))


def test_close_writes_who_and_why_and_only_closes_the_named_incident(store: WebhookDatabase) -> None:
    store.queue.record([alert(100)], T0)
    [incident_id] = _open_ids(store)
    assert store.incidents.close("lab", 100, T0 + 1, "closed:not-found", "webhook", "x",
                                 incident_id=incident_id + 1) is None
    assert store.incidents.close("lab", 999, T0 + 1, "closed:manual", "manual:ann", "x") is None  # no incident
    assert store.incidents.close("lab", 100, T0 + 2, "closed:manual", "manual:ann", "manual: stale") == incident_id
    assert store.incidents.close("lab", 100, T0 + 3, "closed:manual", "manual:ann", "again") is None
    [row] = rows(store, 100)
    assert (row.outcome, row.actor, row.reason, row.incident_id) == (
        "closed:manual", "manual:ann", "manual: stale", incident_id)
    assert open_incidents(store) == []


def test_the_circuit_breakers_candidates_leave_out_closed_and_manual_incidents(store: WebhookDatabase) -> None:
    store.queue.record([alert(100), alert(101), alert(102), alert(103, cluster="other")], T0)
    store.queue.record([alert(104, alertname="manual")], T0)
    store.incidents.close("lab", 102, T0 + 1, "closed:manual", "manual:ann", "gone")
    assert store.incidents.open_incident_vmids("lab") == {100, 101}


def test_only_guests_listed_as_running_count_as_hung() -> None:
    resources = [
        {"type": "qemu", "vmid": 100, "status": "running"}, {"type": "lxc", "vmid": 101, "status": "running"},
        {"type": "qemu", "vmid": 102, "status": "stopped"}, {"type": "qemu", "vmid": 103, "status": "running",
                                                              "template": 1},
        {"type": "storage", "id": "storage/pve1/local", "status": "available"},
    ]
    assert policy.listed_running(resources) == {100, 101}
    assert policy.count_guests(resources) == 3
    ghosts = {900001, 900002, 900003, 900004, 900005, 900006}
    hung = len(({100} | ghosts) & policy.listed_running(resources))
    assert policy.check_circuit(hung, 20, 0.3, 2) is None
    assert {"not-found", "unknown-cluster"} == policy.CLOSING


def test_one_read_per_notification_and_cluster_whatever_the_threads() -> None:
    reads = NotificationReads(keep=2)
    calls: list[str] = []
    gate = threading.Event()

    def slow() -> list[dict[str, Any]]:
        calls.append("read")
        gate.wait(5)
        return [{"type": "qemu", "vmid": 100}]

    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(reads.get(("lab", T0), slow))) for _ in range(20)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(10)
    assert calls == ["read"] and len(got) == 20 and all(g == [{"type": "qemu", "vmid": 100}] for g in got)
    reads.get(("other", T0), slow)
    reads.get(("lab", T0 + 1), slow)
    assert len(calls) == 3  # another cluster, another notification: their own read

    def failing() -> list[dict[str, Any]]:
        calls.append("fail")
        raise PveError("GET cluster/resources: timed out")

    for _ in range(3):
        with pytest.raises(PveError):
            reads.get(("lab", T0 + 2), failing)
    assert calls.count("fail") == 1  # the batch shares its failure too
    reads.get(("lab", T0), slow)
    assert len(calls) == 5  # kept only the newest 2 batches: the first was read again
