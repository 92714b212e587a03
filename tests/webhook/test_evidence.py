"""The evidence behind a reset: the rules' annotations kept with the alert, the two last checks before
acting (I/O since the rules judged the guest idle, a ping of its QEMU guest agent), and what every
history row says it was based on.

Proxmox is `responses` (FakePve, with the status line carrying Proxmox's error message as the real
API's does); the database is a SQLite file.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import requests
import responses
import yaml
from sqlalchemy import update

from tests.helpers.webhook import ADMIN, FakePve, auth, firing, make_config, proxmox_reason
from vmhealth.models.webhook import AlertEvent
from vmhealth.openapi import document
from vmhealth.pve import PveClient, PveError, is_timeout
from vmhealth.webhook import create_app, policy
from vmhealth.webhook.historycli import format_table
from vmhealth.webhook.payload import evidence_of, parse_notification

JUDGED = 5_000_000  # diskwrite + netout when the rules judged the guest idle


def hung(vmid: int, **annotations: Any) -> dict[str, Any]:
    """A VMHung notification whose annotations carry `annotations` (numbers sent as Prometheus would: text)."""
    body = firing(vmid)
    body["alerts"][0]["annotations"].update({k: str(v) for k, v in annotations.items()})
    return body


def rules_evidence(judged: float = JUDGED, ago: float = 60.0) -> dict[str, Any]:
    return {"heartbeat_age_seconds": 412, "io_rate_bytes_per_second": 0, "io_idle_seconds": 300,
            "io_bytes_total": judged, "io_judged_at": f"{time.time() - ago:.3f}"}


def process_all(ctx: Any) -> None:
    """Claim and decide every pending event as the worker does (bulk refusals, then the pool's share)."""
    for _ in range(20):
        ids, refused = ctx.remediator.claim(ctx.worker_id, 100, time.time())
        if not ids and not refused:
            return
        for event_id in ids:
            ctx.run_inline(event_id)
    raise AssertionError("events kept coming back")


@pytest.fixture
def make(tmp_path: Any) -> Iterator[Any]:
    apps: list[Any] = []
    mock = responses.RequestsMock(assert_all_requests_are_fired=False, response_callback=proxmox_reason)
    mock.start()
    pve = FakePve(mock)
    for vmid in range(900, 910):  # stopped guests: the circuit breaker's denominator
        pve.add(vmid, status="stopped", uptime=0)

    def build(timeout: float | None = None, start_worker: bool = False, webhook: dict[str, Any] | None = None,
              **policy_keys: Any) -> SimpleNamespace:
        config = make_config(f"sqlite:///{tmp_path}/webhook.db", webhook, **policy_keys)
        if timeout is not None:
            config = replace(config, clusters=[replace(config.clusters[0], timeout=timeout)])
        app = create_app(config, start_worker=start_worker, task_poll_interval=0.01, settle=0.05, worker_poll=0.05)
        apps.append(app)
        ctx = app.extensions["vmhealth"]
        client = app.test_client()

        def send(body: Any) -> Any:
            response = client.post("/alerts", json=body, headers=auth())
            if not start_worker:
                process_all(ctx)
            return response

        return SimpleNamespace(ctx=ctx, client=client, pve=pve, send=send, store=ctx.store, mock=mock)

    try:
        yield build
    finally:
        for app in apps:
            app.extensions["vmhealth"].close()
        mock.stop()
        mock.reset()


def rows(wh: Any, vmid: int) -> list[dict[str, Any]]:
    reply = wh.client.get(f"/api/resets?vmid={vmid}", headers=auth(ADMIN))
    assert reply.status_code == 200
    return reply.get_json()["resets"]


def last(wh: Any, vmid: int) -> dict[str, Any]:
    return rows(wh, vmid)[0]


# --- the guest-agent ping ---------------------------------------------------------------------------

@pytest.mark.parametrize(("answer", "word"), [
    ("QEMU guest agent is not running", "not-running"),
    ("No QEMU guest agent configured", "not-configured"),
    ("VM 100 is not running", "vm-not-running"),
    (requests.exceptions.ReadTimeout("read timed out"), "timeout"),
    (requests.exceptions.ConnectionError("connection reset by peer"), "error: "),
    (596, "error: "),
])
def test_a_ping_without_an_answer_is_no_evidence_and_the_reset_goes_ahead(make: Any, answer: Any, word: str) -> None:
    wh = make()
    wh.pve.add(100, agent=1)
    wh.pve.ping[100] = answer
    assert wh.send(hung(100)).status_code == 200
    assert wh.pve.resets(100) == 1 and [v for _, v, _ in wh.pve.pings] == [100]
    row = last(wh, 100)
    assert row["outcome"] == "success"
    assert row["evidence"]["guest_agent"].startswith(word)
    if word == "error: ":
        assert len(row["evidence"]["guest_agent"]) > len(word)  # the error itself is kept


def test_an_answering_guest_agent_refuses_the_reset(make: Any) -> None:
    wh = make()
    wh.pve.add(100, agent=1)
    wh.pve.ping[100] = "ok"
    wh.send(hung(100))
    assert wh.pve.resets(100) == 0 and len(wh.pve.pings) == 1
    row = last(wh, 100)
    assert row["outcome"] == "skipped:guest-agent-alive"
    assert row["error"] == "the QEMU guest agent answered: the guest OS is running"
    assert row["evidence"]["guest_agent"] == "alive"
    assert "guest-agent-alive" in policy.TRANSIENT and "active" in policy.TRANSIENT
    labels = {"cluster": "lab", "action": "none", "result": "skipped:guest-agent-alive"}
    assert wh.ctx.metrics.registry.get_sample_value("vmhealth_remediation_actions_total", labels) == 1


def test_the_ping_is_sent_only_to_qemu_guests_whose_agent_is_configured(make: Any) -> None:
    wh = make()
    wh.pve.add(100)  # no `agent` in status/current
    wh.pve.add(101, agent=0)
    wh.pve.add(102, kind="lxc")
    wh.pve.add(103, agent="enabled=1,type=virtio")  # the VM config's spelling
    for vmid in (100, 101, 102, 103):
        wh.pve.ping[vmid] = "ok"
        wh.send(hung(vmid))
    assert [v for _, v, _ in wh.pve.pings] == [103]
    assert [last(wh, v)["evidence"]["guest_agent"] for v in (100, 101, 102, 103)] == [
        "not-configured", "not-configured", "not-qemu", "alive"]
    assert wh.pve.resets() == 3


def test_guest_agent_check_off_sends_no_ping(make: Any) -> None:
    wh = make(guest_agent_check="off")
    wh.pve.add(100, agent=1)
    wh.pve.ping[100] = "ok"
    wh.send(hung(100))
    assert wh.pve.pings == [] and wh.pve.resets(100) == 1
    assert last(wh, 100)["evidence"]["guest_agent"] == "off"


def test_a_forbidden_ping_is_counted_each_time_and_logged_once_per_cluster(make: Any,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vmhealth.webhook.remediate")
    wh = make()
    registry = wh.ctx.metrics.registry
    name = "vmhealth_webhook_guest_agent_check_forbidden_total"
    assert registry.get_sample_value(name, {"cluster": "lab"}) == 0  # exists from the start
    for vmid in (100, 101):
        wh.pve.add(vmid, agent=1)
        wh.pve.ping[vmid] = 403
        wh.send(hung(vmid))
    assert wh.pve.resets() == 2  # no evidence either way: the token's limit is not the guest's state
    assert [last(wh, v)["evidence"]["guest_agent"] for v in (100, 101)] == ["forbidden", "forbidden"]
    assert registry.get_sample_value(name, {"cluster": "lab"}) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "guest agent" in r.getMessage()]
    assert len(warnings) == 1
    assert "VM.GuestAgent.Audit" in warnings[0].getMessage() and "VM.Monitor" in warnings[0].getMessage()


def test_the_client_ping_is_bounded_by_the_cluster_timeout_on_a_real_socket() -> None:
    """A Proxmox that accepts the connection and never answers: PveError within the timeout, seen as one."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held: list[Any] = []
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
    cluster = replace(make_config("sqlite:///unused.db").clusters[0], host=f"127.0.0.1:{server.getsockname()[1]}",
                      timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(PveError) as raised:
            PveClient(cluster).agent_ping("pve1", 100)
    finally:
        server.close()
    assert time.monotonic() - started < 3
    assert raised.value.status is None and is_timeout(raised.value)
    assert policy.guest_agent_answer(raised.value) == "timeout"
    assert not is_timeout(PveError("POST x: HTTP 500 QEMU guest agent is not running", 500))


def test_a_slow_ping_holds_up_no_other_decision_and_no_database_write(make: Any) -> None:
    """The ping of one guest sleeps past the cluster timeout; meanwhile another guest is reset, alerts are
    recorded and the history is read at full speed. The slow one then goes ahead as `timeout`."""
    wh = make(timeout=1.0, start_worker=True)
    slow_started, slow_done = threading.Event(), threading.Event()

    def slow(request: Any) -> Exception:
        slow_started.set()
        time.sleep(float(request.req_kwargs["timeout"]) + 0.5)  # requests would give up at the timeout
        slow_done.set()
        return requests.exceptions.ReadTimeout("read timed out (read timeout=1.0)")

    wh.pve.add(100, agent=1)
    wh.pve.add(101, agent=1)
    wh.pve.ping[100] = slow
    assert wh.send(hung(100)).status_code == 200
    assert slow_started.wait(10)
    started = time.monotonic()
    reply = wh.client.post("/alerts", json=hung(101), headers=auth())
    assert reply.status_code == 200 and time.monotonic() - started < 0.5  # no write lock held by the ping
    while wh.pve.resets(101) == 0 and not slow_done.is_set():
        time.sleep(0.01)
    assert wh.pve.resets(101) == 1 and not slow_done.is_set(), "101 waited for 100's ping"
    assert wh.client.get("/api/resets", headers=auth(ADMIN)).status_code == 200 and not slow_done.is_set()
    assert wh.ctx.worker.drain(30)
    assert wh.pve.resets(100) == 1 and last(wh, 100)["evidence"]["guest_agent"] == "timeout"
    assert {vmid: timeout for _, vmid, timeout in wh.pve.pings} == {100: 1.0, 101: 1.0}


# --- I/O since the rules judged the guest idle --------------------------------------------------------

def test_io_since_the_rules_judged_refuses_as_active(make: Any) -> None:
    wh = make()
    wh.pve.add(100, diskwrite=JUDGED - 2_000_000, netout=2_000_000 + 1_000_000)  # +1 MB in 60 s
    wh.send(hung(100, **rules_evidence()))
    assert wh.pve.resets(100) == 0
    row = last(wh, 100)
    assert row["outcome"] == "skipped:active"
    assert row["error"].startswith("wrote/sent 1000000 bytes since the rules judged it idle 60s ago")
    assert row["evidence"]["io_bytes_total_judged"] == JUDGED
    assert row["evidence"]["io_bytes_total_live"] == JUDGED + 1_000_000


def test_counters_that_went_back_refuse_as_active(make: Any) -> None:
    wh = make()
    wh.pve.add(100, diskwrite=1000, netout=24)  # restarted or migrated since the rules judged
    wh.send(hung(100, **rules_evidence()))
    assert wh.pve.resets(100) == 0
    row = last(wh, 100)
    assert row["outcome"] == "skipped:active"
    assert "went back" in row["error"] and "restarted or migrated" in row["error"]


def test_io_within_the_idle_rate_goes_ahead(make: Any) -> None:
    wh = make()
    wh.pve.add(100, diskwrite=JUDGED, netout=50 * 1024)  # 50 KiB in 60 s: below 1024 B/s
    wh.send(hung(100, **rules_evidence()))
    assert wh.pve.resets(100) == 1 and last(wh, 100)["outcome"] == "success"


def test_the_idle_rate_comes_from_the_thresholds(make: Any) -> None:
    wh = make()
    wh.ctx.remediator.io_idle_rate = 100.0  # what thresholds.io_idle_bytes_per_second: 100 would give
    assert make_config("sqlite:///:memory:").thresholds.io_idle_bytes_per_second == 1024.0
    wh.pve.add(100, diskwrite=JUDGED, netout=50 * 1024)
    wh.send(hung(100, **rules_evidence()))
    assert last(wh, 100)["outcome"] == "skipped:active" and "at 100 B/s" in last(wh, 100)["error"]


def test_without_io_judged_at_the_time_received_is_used(make: Any) -> None:
    wh = make()
    wh.pve.add(100, diskwrite=JUDGED, netout=5000)  # 5000 bytes "just now": more than 1024 B/s over 1 s
    wh.send(hung(100, io_bytes_total=JUDGED, io_judged_at="yesterday"))
    row = last(wh, 100)
    assert row["outcome"] == "skipped:active" and "judged it idle 1s ago" in row["error"]
    assert "io_judged_at" not in row["evidence"]


@pytest.mark.parametrize("case", ["no annotations", "no counters", "one counter"])
def test_without_evidence_the_decision_goes_on(make: Any, case: str) -> None:
    wh = make()
    counters = {"no annotations": {"diskwrite": 1, "netout": 2}, "no counters": {},
                "one counter": {"diskwrite": JUDGED * 2}}[case]
    wh.pve.add(100, **counters)
    wh.send(hung(100) if case == "no annotations" else hung(100, **rules_evidence()))
    assert wh.pve.resets(100) == 1
    evidence = last(wh, 100)["evidence"]
    assert ("io_bytes_total_live" in evidence) == (case == "no annotations")


def test_malformed_annotations_are_not_given_and_the_alert_is_acted_on(make: Any) -> None:
    wh = make()
    wh.pve.add(100, diskwrite=1, netout=1)  # far below io_bytes_total, were it given
    body = hung(100, io_bytes_total="lots", io_judged_at="NaN", heartbeat_age_seconds="1e999",
                io_rate_bytes_per_second="-3", io_idle_seconds="12abc", unknown_key="5")
    assert wh.send(body).status_code == 200
    assert wh.pve.resets(100) == 1
    evidence = last(wh, 100)["evidence"]
    assert set(evidence) == {"io_bytes_total_live", "guest_agent", "qmpstatus", "uptime", "status"}
    assert wh.store.queue.event(1).evidence is None
    not_a_string = hung(101)
    not_a_string["alerts"][0]["annotations"]["io_bytes_total"] = 5  # the payload's limits stay: strings only
    reply = wh.client.post("/alerts", json=not_a_string, headers=auth())
    assert reply.status_code == 400 and "annotations.io_bytes_total" in reply.get_json()["error"]


def test_evidence_of_keeps_plain_decimals_of_the_known_keys_only() -> None:
    given = {"heartbeat_age_seconds": " 412.5 ", "io_rate_bytes_per_second": "1.5e+03", "io_idle_seconds": "-0",
             "io_bytes_total": "1_000", "io_judged_at": "0x10", "summary": "7", "io_bytes_total_live": "9"}
    assert evidence_of(given) == {"heartbeat_age_seconds": 412.5, "io_rate_bytes_per_second": 1500.0,
                                  "io_idle_seconds": 0.0}
    for bad in ("", "inf", "nan", "1e999", "-1", "1" * 65, "½", "1 2", "٣"):
        assert evidence_of({"io_bytes_total": bad}) == {}, bad
    body = hung(100, **rules_evidence(judged=12))
    [alert] = parse_notification(body, "lab").alerts
    assert set(alert.evidence) == {"heartbeat_age_seconds", "io_rate_bytes_per_second", "io_idle_seconds",
                                   "io_bytes_total", "io_judged_at"} and alert.evidence["io_bytes_total"] == 12


# --- dry-run ------------------------------------------------------------------------------------------

def test_dry_run_makes_both_checks(make: Any) -> None:
    wh = make(dry_run=True)
    wh.pve.add(100, agent=1, diskwrite=JUDGED, netout=0)
    wh.pve.add(101, agent=1, diskwrite=JUDGED * 2, netout=0)
    wh.pve.add(102, agent=1, diskwrite=JUDGED, netout=0)
    wh.pve.ping.update({100: "ok", 101: "ok", 102: "QEMU guest agent is not running"})
    for vmid in (100, 101, 102):
        wh.send(hung(vmid, **rules_evidence()))
    assert wh.pve.posts == []
    assert [last(wh, v)["outcome"] for v in (100, 101, 102)] == ["skipped:guest-agent-alive", "skipped:active",
                                                                 "dry-run"]
    assert [v for _, v, _ in wh.pve.pings] == [100, 102]  # the active guest needs no ping
    assert last(wh, 102)["evidence"]["guest_agent"] == "not-running"


# --- the history ----------------------------------------------------------------------------------------

def test_evidence_is_stored_with_the_event_and_each_decision_and_returned(make: Any) -> None:
    wh = make()
    wh.pve.add(100, agent=1, diskwrite=JUDGED - 1000, netout=1100, uptime=86400)
    wh.pve.ping[100] = "QEMU guest agent is not running"
    sent = rules_evidence()
    wh.send(hung(100, **sent))
    stored = json.loads(wh.store.queue.event(1).evidence)
    assert stored == {k: float(v) for k, v in sent.items()}
    row = last(wh, 100)
    assert row["outcome"] == "success"
    assert row["evidence"] == {
        "heartbeat_age_seconds": 412, "io_rate_bytes_per_second": 0, "io_idle_seconds": 300,
        "io_bytes_total_judged": JUDGED, "io_judged_at": pytest.approx(float(sent["io_judged_at"])),
        "io_bytes_total_live": JUDGED + 100, "guest_agent": "not-running", "qmpstatus": "running",
        "uptime": 86400, "status": "running"}
    history = wh.client.get("/api/vms/100/reset-history", headers=auth(ADMIN)).get_json()
    assert history[0]["evidence"] == row["evidence"]
    schemas = yaml.safe_load(document())["components"]["schemas"]
    assert "evidence" in schemas["Action"]["required"]
    jsonschema.validate(row["evidence"], {**schemas["Evidence"], "additionalProperties": False})


def test_rows_refused_before_the_reads_carry_what_the_alert_gave(make: Any) -> None:
    wh = make(enabled=False)  # the kill switch: refused in bulk, while claiming
    wh.pve.add(100, agent=1, diskwrite=1, netout=1)
    wh.send(hung(100, **rules_evidence()))
    rate = make(max_actions_per_hour=0)  # refused by the decision, before Proxmox is read
    rate.pve.add(101, agent=1, diskwrite=1, netout=1)
    rate.send(hung(101, **rules_evidence()))
    given = {"heartbeat_age_seconds", "io_rate_bytes_per_second", "io_idle_seconds", "io_bytes_total_judged",
             "io_judged_at"}
    assert last(wh, 100)["outcome"] == "skipped:disabled" and set(last(wh, 100)["evidence"]) == given
    assert last(rate, 101)["outcome"] == "skipped:rate-limited" and set(last(rate, 101)["evidence"]) == given
    assert wh.pve.pings == []


def test_a_later_delivery_brings_the_newer_evidence(make: Any) -> None:
    wh = make()
    wh.pve.add(100, diskwrite=JUDGED * 2, netout=0)
    wh.send(hung(100, **rules_evidence()))
    assert last(wh, 100)["outcome"] == "skipped:active"
    with wh.store.tx() as session:  # the retry interval has passed
        session.execute(update(AlertEvent).values(retry_after=time.time() - 1))
    wh.send(hung(100, **rules_evidence(judged=JUDGED * 2, ago=30)))  # the rules judged again, on the new totals
    assert wh.pve.resets(100) == 1 and last(wh, 100)["evidence"]["io_bytes_total_judged"] == JUDGED * 2


def test_rows_without_evidence_return_an_empty_object_and_the_table_summarises_it(make: Any) -> None:
    wh = make()
    wh.pve.add(100, status="stopped", uptime=0)
    resolved = firing(100, status="resolved")
    wh.send(hung(100))
    wh.send(resolved)
    outcomes = {r["outcome"]: r["evidence"] for r in rows(wh, 100)}
    assert outcomes["resolved"] == {} and outcomes["skipped:not-running"]["status"] == "stopped"
    table = format_table([{**r, "evidence": {"heartbeat_age_seconds": 412, "io_rate_bytes_per_second": 0,
                                             "io_idle_seconds": 300, "io_bytes_total_judged": 10,
                                             "io_bytes_total_live": 130, "guest_agent": "timeout"}}
                          for r in rows(wh, 100)[-1:]])
    assert table.splitlines()[1].endswith(
        "[heartbeat 412s, io 0 B/s idle 300s, +120 B since judged, agent timeout]"), table


# --- the heartbeat veto -----------------------------------------------------------------------------

PROMETHEUS = "http://prometheus.test:9090"


def prometheus_age(wh: Any, age: float | None, status: int = 200) -> list[str]:
    """Prometheus answering the webhook's heartbeat query with `age` (None: no series); the queries sent."""
    queries: list[str] = []

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        queries.append(request.params["query"])
        result = [] if age is None else [{"metric": {}, "value": [time.time(), str(age)]}]
        return status, {}, json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})

    wh.mock.add_callback(responses.GET, f"{PROMETHEUS}/api/v1/query", callback=answer)
    return queries


def test_a_fresh_heartbeat_refuses_the_reset_as_transient(make: Any) -> None:
    wh = make(webhook={"prometheus_url": PROMETHEUS})
    wh.pve.add(100)
    queries = prometheus_age(wh, 12.4)
    wh.send(hung(100))
    assert wh.pve.resets(100) == 0
    assert queries == ['time() - max(vmhealth_heartbeat_timestamp_seconds{cluster="lab",vmid="100"})']
    row = last(wh, 100)
    assert row["outcome"] == "skipped:heartbeat-fresh" and "heartbeat-fresh" in policy.TRANSIENT
    assert "12s old, within the stale timeout 90s" in row["error"]
    assert row["evidence"]["heartbeat_age"] == 12.4 and row["evidence"]["heartbeat_source"] == "prometheus"
    assert "heartbeat now 12s (prometheus)" in format_table([row])


@pytest.mark.parametrize(("age", "status"), [(95.0, 200), (None, 200), (3.0, 503)])
def test_a_stale_unknown_or_unreadable_heartbeat_lets_the_reset_go_ahead(make: Any, age: float | None,
                                                                        status: int) -> None:
    wh = make(webhook={"prometheus_url": PROMETHEUS})
    wh.pve.add(100)
    prometheus_age(wh, age, status)
    wh.send(hung(100))
    assert wh.pve.resets(100) == 1
    evidence = last(wh, 100)["evidence"]
    assert evidence["heartbeat_source"] == "prometheus"
    if status != 200:
        assert "503" in evidence["heartbeat_error"] and "heartbeat_age" not in evidence
    elif age is None:
        assert "heartbeat_age" not in evidence and "heartbeat_error" not in evidence
    else:
        assert evidence["heartbeat_age"] == 95.0


def test_without_a_source_no_heartbeat_is_read_and_the_start_says_so(make: Any,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vmhealth.webhook.app"):
        wh = make()
    assert "an alert is trusted alone" in caplog.text
    wh.pve.add(100)
    wh.send(hung(100))
    assert wh.pve.resets(100) == 1 and "heartbeat_source" not in last(wh, 100)["evidence"]


def test_the_veto_applies_to_a_forced_manual_reset_too(make: Any) -> None:
    wh = make(webhook={"prometheus_url": PROMETHEUS})
    wh.pve.add(100)
    prometheus_age(wh, 5.0)
    reply = wh.client.post("/api/vms/100/reset", json={"cluster": "lab", "reason": "test", "force": True},
                           headers=auth(ADMIN))
    assert reply.get_json()["outcome"] == "skipped:heartbeat-fresh", reply.get_json()
    assert wh.pve.resets(100) == 0
