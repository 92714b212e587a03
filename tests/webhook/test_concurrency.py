"""Exactly once under concurrency: duplicate deliveries in parallel, and two webhook instances with
their own workers on one database (the real PostgreSQL, and SQLite)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import responses

from tests.helpers.webhook import ADMIN, FakePve, auth, firing, make_config
from vmhealth.webhook import create_app


@pytest.fixture
def apps() -> Iterator[list[Any]]:
    started: list[Any] = []
    try:
        yield started
    finally:
        for app in started:
            app.extensions["vmhealth"].close()


def start(apps: list[Any], url: str, **policy: Any) -> Any:
    app = create_app(make_config(url, **policy), task_poll_interval=0.01, settle=0.05, worker_poll=0.05)
    apps.append(app)
    return app


def drain(*instances: Any) -> None:
    for app in instances:
        assert app.extensions["vmhealth"].worker.drain(30), "the worker did not finish in 30 s"


def post_in_parallel(clients: list[Any], body: dict[str, Any], times: int) -> list[int]:
    barrier = threading.Barrier(times)

    def send(i: int) -> int:
        barrier.wait(10)
        return clients[i % len(clients)].post("/alerts", json=body, headers=auth()).status_code

    with ThreadPoolExecutor(times) as pool:
        return list(pool.map(send, range(times)))


def _database(request: Any, tmp_path: Any) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path}/webhook.db"


@pytest.fixture(params=["postgres", "sqlite"])
def database(request: Any, tmp_path: Any) -> str:
    return _database(request, tmp_path)


def test_five_parallel_duplicates_reset_once(database: str, pve: FakePve, apps: list[Any]) -> None:
    pve.add(100)
    app = start(apps, database)
    codes = post_in_parallel([app.test_client()], firing(100), 5)
    assert codes == [200] * 5
    drain(app)
    assert pve.resets(100) == 1
    rows = app.test_client().get("/api/resets?vmid=100", headers=auth(ADMIN)).get_json()["resets"]
    assert [r["outcome"] for r in rows] == ["success"]


def test_two_instances_on_one_database_act_once(database: str, pve: FakePve, apps: list[Any]) -> None:
    for vmid in (100, 101, 102):
        pve.add(vmid)
    first, second = start(apps, database), start(apps, database)
    clients = [first.test_client(), second.test_client()]
    for vmid in (100, 101, 102):
        assert post_in_parallel(clients, firing(vmid), 6) == [200] * 6
    drain(first, second)
    assert [pve.resets(vmid) for vmid in (100, 101, 102)] == [1, 1, 1]
    rows = clients[0].get("/api/resets", headers=auth(ADMIN)).get_json()["resets"]
    assert sorted((r["vmid"], r["outcome"]) for r in rows) == [(100, "success"), (101, "success"), (102, "success")]
    # Both instances see the same incidents (the gauge is read from the shared database).
    for app in (first, second):
        registry = app.extensions["vmhealth"].metrics.registry
        labels = {"cluster": "lab", "vmid": "101"}
        assert registry.get_sample_value("vmhealth_remediation_incident_attempts", labels) == 1


def test_two_instances_decide_each_refusal_once(database: str, pve: FakePve, apps: list[Any]) -> None:
    """Refusals decided in bulk while claiming: each event by one instance, with one history row."""
    first, second = start(apps, database, enabled=False), start(apps, database, enabled=False)
    vmids = list(range(100, 160))
    for part, app in ((vmids[::2], first), (vmids[1::2], second)):
        body = firing(part[0])
        body["alerts"] = [firing(vmid)["alerts"][0] for vmid in part]
        assert app.test_client().post("/alerts", json=body, headers=auth()).status_code == 200
    drain(first, second)
    rows = first.test_client().get("/api/resets?limit=1000", headers=auth(ADMIN)).get_json()["resets"]
    assert sorted(r["vmid"] for r in rows) == vmids and {r["outcome"] for r in rows} == {"skipped:disabled"}
    counted = [app.extensions["vmhealth"].metrics.registry.get_sample_value(
        "vmhealth_remediation_actions_total", {"cluster": "lab", "action": "none", "result": "skipped:disabled"})
        for app in (first, second)]
    assert sum(c or 0 for c in counted) == len(vmids) and pve.posts == []


def test_drain_waits_until_the_refusals_are_counted(database: str, pve: FakePve, apps: list[Any]) -> None:
    """Refusals are committed, then counted: a drained worker has counted every one of them."""
    app = start(apps, database, enabled=False)
    metrics = app.extensions["vmhealth"].metrics
    count = metrics.action

    def slowly(*args: Any) -> None:
        time.sleep(0.05)
        count(*args)

    metrics.action = slowly
    body = firing(100)
    body["alerts"] = [firing(vmid)["alerts"][0] for vmid in range(100, 120)]
    assert app.test_client().post("/alerts", json=body, headers=auth()).status_code == 200
    drain(app)
    assert metrics.registry.get_sample_value("vmhealth_remediation_actions_total", {
        "cluster": "lab", "action": "none", "result": "skipped:disabled"}) == 20


def test_different_alerts_for_one_guest_on_two_instances_reset_once(
    database: str, pve: FakePve, apps: list[Any]
) -> None:
    """Two rules fire for the same guest at once: two events, one incident, one attempt."""
    pve.add(100)
    first, second = start(apps, database), start(apps, database)
    clients = [first.test_client(), second.test_client()]
    barrier = threading.Barrier(8)

    def send(i: int) -> int:
        barrier.wait(10)
        body = firing(100, fingerprint=f"rule{i % 4}")
        return clients[i % 2].post("/alerts", json=body, headers=auth()).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(send, range(8))) == [200] * 8
    drain(first, second)
    assert pve.resets(100) == 1
    outcomes = [r["outcome"] for r in clients[0].get("/api/resets?vmid=100", headers=auth(ADMIN)).get_json()["resets"]]
    # The other events are refused (cooldown, or booting when they looked after the reset), never acted on.
    assert outcomes.count("success") == 1 and all(o == "success" or o.startswith("skipped:") for o in outcomes)


class SlowResets(FakePve):
    """Each power action takes `seconds`, and the most in progress at once is kept."""

    def __init__(self, mock: responses.RequestsMock, seconds: float):
        super().__init__(mock)
        self.seconds, self.running, self.most = seconds, 0, 0
        self._count = threading.Lock()

    def post(self, request: Any) -> tuple[int, dict[str, str], str]:
        if "/agent/" in request.url:
            return super().post(request)
        with self._count:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.seconds)
            return super().post(request)
        finally:
            with self._count:
                self.running -= 1


def test_two_replicas_together_keep_max_concurrent_actions(postgres_url: str, apps: list[Any]) -> None:
    """Six hung guests, two replicas on one PostgreSQL, each with a pool of 2 threads, and a limit of 2:
    the limit is judged inside the claim, so the replicas together never have more than 2 resets in
    flight (before, each counted the other's claims only before reading Proxmox: up to 4 at once)."""
    mock = responses.RequestsMock(assert_all_requests_are_fired=False)
    mock.start()
    try:
        pve = SlowResets(mock, seconds=0.4)
        hung = list(range(100, 106))
        for vmid in range(100, 140):  # 6 of 40 running guests hung: well under the circuit breaker
            pve.add(vmid)
        policy = {"max_concurrent_actions": 2, "retry_interval": "1s"}
        first, second = start(apps, postgres_url, **policy), start(apps, postgres_url, **policy)
        deadline = time.monotonic() + 60
        while [pve.resets(vmid) for vmid in hung] != [1] * len(hung) and time.monotonic() < deadline:
            # Alertmanager delivers each still-firing alert again (here every second, to both replicas);
            # a guest refused as `busy` is looked at again then
            for index, vmid in enumerate(hung):
                client = (first if index % 2 else second).test_client()
                assert client.post("/alerts", json=firing(vmid), headers=auth()).status_code == 200
            time.sleep(1.0)
        assert [pve.resets(vmid) for vmid in hung] == [1] * len(hung), "every hung guest is reset, once"
        assert pve.most == 2, f"{pve.most} resets were in flight at once (limit 2)"
        rows = first.test_client().get("/api/resets?limit=1000", headers=auth(ADMIN)).get_json()["resets"]
        assert sorted(r["vmid"] for r in rows if r["outcome"] == "success") == hung
    finally:
        mock.stop()
        mock.reset()
