"""The webhook's decisions end to end inside one app: receiver, policy, actions, history, metrics.

Proxmox is `responses` (FakePve); the database is a real SQLite file. Events are processed by
`process_all`, which claims and decides them the way the worker does, so each test is deterministic:
every test runs twice, once with the refusals that need no Proxmox decided in bulk while claiming
(as the worker does) and once with every event decided on its own (as the manual API does).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import responses
from sqlalchemy import select, update

from tests.helpers.webhook import ADMIN, TOKEN, FakePve, auth, firing, make_config, payload, timeout_error
from vmhealth.models.webhook import Action, AlertEvent, Incident
from vmhealth.webhook import create_app


def process_all(ctx: Any, bulk: bool = True, rounds: int = 20) -> None:
    """Claim and decide every pending event, as the worker would (bounded); `bulk` False: one by one."""
    for _ in range(rounds):
        if bulk:
            ids, refused = ctx.remediator.claim(ctx.worker_id, 100, time.time())
        else:
            ids, refused = ctx.store.queue.claim_or_refuse(ctx.worker_id, 100, time.time(), ctx.lease)[0], 0
        if not ids and not refused:
            return
        for event_id in ids:
            ctx.run_inline(event_id)
    raise AssertionError("events kept coming back")


@pytest.fixture(params=["bulk", "one by one"])
def make(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    apps: list[Any] = []
    mock = responses.RequestsMock(assert_all_requests_are_fired=False)
    mock.start()
    pve = FakePve(mock)
    for vmid in range(900, 910):  # stopped guests: the circuit breaker's denominator
        pve.add(vmid, status="stopped", uptime=0)

    bulk = request.param == "bulk"

    def build(**policy: Any) -> SimpleNamespace:
        config = make_config(f"sqlite:///{tmp_path}/webhook.db", **policy)
        app = create_app(config, start_worker=False, task_poll_interval=0.01, settle=0.05)
        apps.append(app)
        ctx = app.extensions["vmhealth"]
        client = app.test_client()

        def send(body: Any, token: str | None = None) -> Any:
            response = client.post("/alerts", json=body, headers=auth(token) if token else auth())
            process_all(ctx, bulk)
            return response

        return SimpleNamespace(app=app, ctx=ctx, client=client, pve=pve, send=send, store=ctx.store,
                               process=lambda: process_all(ctx, bulk))

    try:
        yield build
    finally:
        for app in apps:
            app.extensions["vmhealth"].close()
        mock.stop()
        mock.reset()


def time_passes(wh: Any, seconds: float) -> None:
    """Move every recorded time back, as if `seconds` had passed."""
    with wh.store.tx() as session:
        session.execute(update(Action).values(at=Action.at - seconds))
        session.execute(update(Incident).where(Incident.next_attempt_at.is_not(None)).values(
            next_attempt_at=Incident.next_attempt_at - seconds, last_attempt_at=Incident.last_attempt_at - seconds))
        session.execute(update(AlertEvent).where(AlertEvent.retry_after.is_not(None)).values(
            retry_after=AlertEvent.retry_after - seconds))


def history(wh: Any, vmid: int) -> list[dict[str, Any]]:
    return wh.client.get(f"/api/resets?vmid={vmid}&limit=1000", headers=auth(ADMIN)).get_json()["resets"]


def outcomes(wh: Any, vmid: int) -> list[str]:
    return [row["outcome"] for row in reversed(history(wh, vmid))]


def sample(wh: Any, name: str, **labels: str) -> float | None:
    return wh.ctx.metrics.registry.get_sample_value(name, labels)


def test_firing_resets_once_and_records_the_task(make: Any) -> None:
    wh = make()
    wh.pve.add(100)
    response = wh.send(payload("v4-firing-single.json"))
    assert response.status_code == 200, response.get_json()
    assert wh.pve.resets(100) == 1
    [row] = history(wh, 100)
    assert row["outcome"] == "success" and row["action"] == "reset" and row["attempt"] == 1
    assert row["upid"].startswith("UPID:pve1:") and row["exitstatus"] == "OK"
    assert row["actor"] == "alertmanager" and row["node"] == "pve1" and row["name"] == "vm100"
    assert sample(wh, "vmhealth_remediation_actions_total", cluster="lab", action="reset", result="success") == 1
    assert sample(wh, "vmhealth_remediation_incident_attempts", cluster="lab", vmid="100") == 1
    assert sample(wh, "vmhealth_remediation_action_latency_seconds_count") == 1


def test_every_shared_payload_is_accepted(make: Any) -> None:
    wh = make(cooldown="1h")
    wh.pve.add(100)
    wh.pve.add(101)
    for name in ("v4-firing-single.json", "v4-firing-am0.34-extra-fields.json", "v4-receiver-name-escaped.json",
                 "v4-repeat-interval.json", "v4-truncated-max_alerts-1.json", "v4-grouped-mixed-status.json"):
        assert wh.send(payload(name)).status_code == 200, name
    # All of them are the same alert (fingerprint + startsAt): one reset; 101's alert is resolved.
    assert wh.pve.resets() == 1
    assert wh.pve.resets(101) == 0


def test_duplicates_sequential_and_parallel_reset_once(make: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    wh = make()
    wh.pve.add(100)
    body = firing(100)
    with ThreadPoolExecutor(5) as pool:
        codes = list(pool.map(lambda _: wh.client.post("/alerts", json=body, headers=auth()).status_code, range(5)))
    assert codes == [200] * 5
    for _ in range(5):
        wh.send(body)
    assert wh.pve.resets(100) == 1
    assert outcomes(wh, 100) == ["success"]


def test_one_notification_repeating_an_alert_records_it_once_and_keeps_the_rest(make: Any) -> None:
    """The same alert twice in one message, then its resolve: one event delivered twice, the other
    alerts of the message recorded too, the incident closed, nothing reset."""
    wh = make()
    wh.pve.add(100)
    wh.pve.add(101)
    body = firing(100)
    body["alerts"] = [*body["alerts"] * 2, firing(101)["alerts"][0], firing(100, status="resolved")["alerts"][0]]
    reply = wh.client.post("/alerts", json=body, headers=auth())
    assert reply.status_code == 200, reply.get_json()
    assert [a["result"] for a in reply.get_json()["alerts"]] == ["recorded", "duplicate", "recorded", "resolved"]
    with wh.store.read() as session:
        events = session.scalars(select(AlertEvent).where(AlertEvent.vmid == 100)).all()
    assert sorted((e.status, e.deliveries) for e in events) == [("firing", 2), ("resolved", 1)]
    process_all(wh.ctx)
    assert wh.pve.resets(100) == 0 and wh.pve.resets(101) == 1
    assert [(c, v) for c, v, _ in wh.store.incidents.open_incident_attempts()] == [("lab", 101)]


def test_resolved_closes_the_incident_and_attempts_start_again(make: Any) -> None:
    wh = make(cooldown="0s")
    wh.pve.add(100)
    wh.send(firing(100))
    wh.pve.guests[100]["uptime"] = 86400
    assert sample(wh, "vmhealth_remediation_incident_attempts", cluster="lab", vmid="100") == 1
    assert wh.send(firing(100, status="resolved")).status_code == 200
    assert sample(wh, "vmhealth_remediation_incident_attempts", cluster="lab", vmid="100") is None
    assert outcomes(wh, 100) == ["success", "resolved"]
    # A new incident (new startsAt) starts from attempt 1 again.
    wh.send(firing(100, starts_at="2026-01-01T02:00:00Z"))
    rows = history(wh, 100)
    assert rows[0]["outcome"] == "success" and rows[0]["attempt"] == 1 and wh.pve.resets(100) == 2


def test_a_later_instance_resolving_closes_the_incident_an_older_one_does_not(make: Any) -> None:
    """The alert fired again within one group interval, so Alertmanager never said the first instance
    (00:05) ended: the second instance (00:07) joined its incident, and its end must close it. A late
    resolved for an instance older than the incident (00:01) leaves the incident open."""
    wh = make()
    wh.pve.add(100)
    wh.send(firing(100, starts_at="2026-01-01T00:05:00Z"))
    wh.send(firing(100, starts_at="2026-01-01T00:07:00.5Z"))
    assert wh.pve.resets(100) == 1
    assert wh.send(firing(100, status="resolved", starts_at="2026-01-01T00:01:00Z")).status_code == 200
    assert len(wh.store.incidents.open_incident_attempts()) == 1 and "resolved" not in outcomes(wh, 100)
    assert wh.send(firing(100, status="resolved", starts_at="2026-01-01T00:07:00.5Z")).status_code == 200
    assert wh.store.incidents.open_incident_attempts() == [] and outcomes(wh, 100)[-1] == "resolved"
    assert sample(wh, "vmhealth_remediation_incident_attempts", cluster="lab", vmid="100") is None


def test_a_resolved_alert_that_arrives_first_prevents_the_reset(make: Any) -> None:
    wh = make()
    wh.pve.add(100)
    wh.client.post("/alerts", json=firing(100), headers=auth())
    wh.send(firing(100, status="resolved"))
    wh.send(firing(100))
    assert wh.pve.resets(100) == 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"status": "stopped", "uptime": 0}, "skipped:not-running"),
        ({"qmpstatus": "paused"}, "skipped:paused"),
        ({"qmpstatus": "io-error"}, "skipped:paused"),
        ({"lock": "backup"}, "skipped:locked"),
        ({"template": 1}, "skipped:template"),
        ({"uptime": 30}, "skipped:booting"),
        ({"tags": "prod;vmhealth-noreset"}, "skipped:denied-tag"),
    ],
)
def test_guests_that_must_not_be_reset_are_skipped_with_the_reason(make: Any, change: dict, reason: str) -> None:
    wh = make()
    wh.pve.add(100, **change)
    assert wh.send(firing(100)).status_code == 200
    assert wh.pve.posts == []
    [row] = history(wh, 100)
    assert row["outcome"] == reason and row["error"]


def test_node_offline_no_quorum_deny_list_and_opt_in(make: Any) -> None:
    wh = make(deny_vmids=[102], opt_in=True, allow_vmids=[100, 101, 102], allow_tags=["reset-ok"])
    wh.pve.add(100, node="pve2")
    wh.pve.add(101)
    wh.pve.add(102)
    wh.pve.add(103)
    wh.pve.nodes["pve2"] = 0
    wh.send(firing(100))
    assert outcomes(wh, 100) == ["skipped:node-offline"]
    wh.pve.quorate = 0
    wh.send(firing(101))
    assert outcomes(wh, 101) == ["skipped:no-quorum"]
    wh.pve.quorate = 1
    wh.send(firing(102))
    assert outcomes(wh, 102) == ["skipped:denied-vmid"]
    wh.send(firing(103))
    assert outcomes(wh, 103) == ["skipped:not-opted-in"]
    assert wh.pve.posts == []


def test_task_errors_fail_then_cooldown_then_quarantine_then_release(make: Any) -> None:
    wh = make(max_attempts=2, cooldown="10m", retry_interval="0s")
    wh.pve.add(100)
    wh.pve.exitstatus = ["VM is locked (backup)", "VM 100 qmp command 'system_reset' failed - got timeout"]
    wh.send(firing(100))
    [row] = history(wh, 100)
    assert row["outcome"] == "failed" and row["exitstatus"] == "VM is locked (backup)"
    # Alertmanager repeats inside the cooldown: a duplicate, nothing is done.
    assert wh.send(firing(100)).get_json()["alerts"][0]["result"] == "duplicate"
    # Another alert about the same guest (new fingerprint) meets the incident's cooldown.
    wh.send(firing(100, fingerprint="other-rule"))
    assert outcomes(wh, 100) == ["failed", "skipped:cooldown"] and wh.pve.resets(100) == 1
    # The cooldown passes (doubles next time): the second attempt fails too, and the guest is quarantined.
    time_passes(wh, 601)
    wh.send(firing(100))
    rows = history(wh, 100)
    assert rows[0]["attempt"] == 2 and "qmp command" in rows[0]["exitstatus"]
    incident = wh.store.incidents.incident(rows[0]["incident"])
    assert incident.next_attempt_at - incident.last_attempt_at == pytest.approx(1200)
    assert sample(wh, "vmhealth_remediation_quarantined", cluster="lab", vmid="100") == 1
    assert sample(wh, "vmhealth_remediation_incident_attempts", cluster="lab", vmid="100") == 2
    time_passes(wh, 1201)
    wh.send(firing(100))
    assert outcomes(wh, 100)[-1] == "skipped:quarantined" and wh.pve.resets(100) == 2
    # A person releases it: the incident ends, attempts start again from zero on the next delivery.
    assert wh.client.post("/api/vms/100/release", headers=auth(ADMIN)).status_code == 200
    assert wh.client.post("/api/vms/100/release", headers=auth(ADMIN)).status_code == 404
    assert sample(wh, "vmhealth_remediation_quarantined", cluster="lab", vmid="100") is None
    wh.send(firing(100))
    rows = history(wh, 100)
    assert rows[0]["outcome"] == "success" and rows[0]["attempt"] == 1 and wh.pve.resets(100) == 3
    assert rows[1]["outcome"] == "released"


def test_lxc_is_rebooted(make: Any) -> None:
    wh = make()
    wh.pve.add(200, kind="lxc")
    wh.send(firing(200))
    assert wh.pve.posts == [("pve1", 200, "reboot")]
    assert history(wh, 200)[0]["action"] == "reboot"


@pytest.mark.parametrize("error", [500, "timeout"])
def test_no_clear_answer_on_the_post_reads_the_task_list_instead_of_resetting_again(make: Any, error: Any) -> None:
    wh = make(retry_interval="0s")
    wh.pve.add(100)
    wh.pve.post_error = [timeout_error() if error == "timeout" else error]
    wh.pve.start_task_on_error = True
    wh.send(firing(100))
    [row] = history(wh, 100)
    assert row["outcome"] == "success" and row["upid"] and "found after" in row["error"]
    wh.send(firing(100))
    assert wh.pve.resets(100) == 1


def test_unknown_outcome_is_settled_from_the_task_list_before_the_next_attempt(make: Any) -> None:
    wh = make(retry_interval="0s", cooldown="0s")
    wh.pve.add(100)
    wh.pve.post_error = [timeout_error()]
    wh.send(firing(100))
    [row] = history(wh, 100)
    assert row["outcome"] == "unknown" and "no reset task" in row["error"]
    # The task shows up late (Proxmox was slow): the next delivery finds it and does not reset again.
    upid = "UPID:pve1:00000099:0000ABCD:00000000:qmreset:100:monitor@pve!vmhealth:"
    wh.pve.tasks[upid] = {"upid": upid, "node": "pve1", "type": "qmreset", "id": "100",
                          "starttime": int(time.time()), "status": "stopped", "exitstatus": "OK"}
    wh.pve.guests[100]["uptime"] = 10
    wh.send(firing(100))
    rows = history(wh, 100)
    assert rows[-1]["outcome"] == "success" and rows[-1]["upid"] == upid
    assert rows[0]["outcome"] == "skipped:booting"
    assert wh.pve.resets(100) == 1


def test_an_unknown_attempt_is_never_credited_with_the_next_attempts_task(make: Any) -> None:
    """Attempt 1 got a 503 and started nothing; attempt 2 reset the guest. Looking attempt 1 up again
    later finds only attempt 2's task, which is not attempt 1's: one reset, one success in the history."""
    wh = make(retry_interval="0s", cooldown="0s")
    wh.pve.add(100)
    wh.pve.post_error = [503]
    wh.send(firing(100))
    wh.send(firing(100))
    [task] = [upid for upid, t in wh.pve.tasks.items() if t["type"] == "qmreset"]
    assert [r["outcome"] for r in history(wh, 100)] == ["success", "unknown"]
    wh.pve.guests[100]["uptime"] = 10
    wh.send(firing(100))  # settles attempt 1 again before deciding (booting)
    rows = {r["attempt"]: r for r in history(wh, 100) if r["attempt"]}
    assert rows[1]["outcome"] == "unknown" and rows[1]["upid"] is None, rows[1]
    assert rows[2]["outcome"] == "success" and rows[2]["upid"] == task
    assert wh.pve.resets(100) == 2 and len(wh.pve.tasks) == 1  # two POSTs, the first refused


def test_permission_denied_is_a_failed_attempt(make: Any) -> None:
    wh = make()
    wh.pve.add(100)
    wh.pve.post_error = [403]
    wh.send(firing(100))
    [row] = history(wh, 100)
    assert row["outcome"] == "failed" and "HTTP 403" in row["error"]
    assert wh.pve.resets(100) == 1


def test_dry_run_touches_nothing_and_records_everything(make: Any) -> None:
    wh = make(dry_run=True)
    wh.pve.add(100)
    wh.pve.add(101, lock="backup")
    wh.send(firing(100))
    wh.send(firing(101))
    assert wh.pve.posts == []
    assert outcomes(wh, 100) == ["dry-run"] and outcomes(wh, 101) == ["skipped:locked"]
    assert "would reset" in history(wh, 100)[0]["reason"]


def test_kill_switch(make: Any) -> None:
    wh = make(enabled=False)
    wh.pve.add(100)
    wh.send(firing(100))
    assert wh.pve.posts == [] and outcomes(wh, 100) == ["skipped:disabled"]


def notify(wh: Any, *vmids: int) -> None:
    """One notification with a firing alert per guest, recorded but not decided."""
    body = firing(vmids[0])
    body["alerts"] = [firing(vmid)["alerts"][0] for vmid in vmids]
    assert wh.client.post("/alerts", json=body, headers=auth()).status_code == 200


def events(wh: Any) -> dict[int, AlertEvent]:
    with wh.store.read() as session:
        return {event.vmid: event for event in session.scalars(select(AlertEvent).order_by(AlertEvent.id))}


@pytest.mark.parametrize("make", ["bulk"], indirect=True)
def test_refusals_are_decided_in_bulk_while_claiming_even_with_the_pool_full(make: Any) -> None:
    wh = make(enabled=False, retry_interval="1m")
    wh.pve.add(100)
    notify(wh, *range(100, 105))
    ctx, started = wh.ctx, time.time()
    assert ctx.remediator.claim(ctx.worker_id, 0, time.time(), batch=3) == ([], 3)
    assert [event.state for event in events(wh).values()] == ["done"] * 3 + ["pending"] * 2
    assert ctx.remediator.claim(ctx.worker_id, 0, time.time()) == ([], 2)
    for vmid, event in events(wh).items():
        assert event.state == "done" and event.claimed_by == ctx.worker_id
        assert event.result.startswith("skipped:disabled: webhook.policy.enabled is false")
        assert started + 60 <= event.retry_after <= time.time() + 60
        [row] = history(wh, vmid)
        assert row["outcome"] == "skipped:disabled" and row["incident"] is not None and row["attempt"] is None
    assert sample(wh, "vmhealth_remediation_actions_total", cluster="lab", action="none",
                  result="skipped:disabled") == 5
    assert wh.pve.posts == [] and ctx.remediator.claim(ctx.worker_id, 2, time.time()) == ([], 0)


@pytest.mark.parametrize("make", ["bulk"], indirect=True)
def test_an_event_that_needs_proxmox_is_not_overtaken_by_later_refusals(make: Any) -> None:
    wh = make()
    for vmid in (100, 101):
        wh.pve.add(vmid)
    wh.store.incidents.quarantine("lab", 101, None, 3, "three failed resets", time.time())
    notify(wh, 100, 101)
    ctx = wh.ctx
    assert ctx.remediator.claim(ctx.worker_id, 0, time.time()) == ([], 0)  # the pool is full: 100 waits first
    assert [event.state for event in events(wh).values()] == ["pending", "pending"]
    assert ctx.remediator.claim(ctx.worker_id, 1, time.time()) == ([events(wh)[100].id], 1)
    assert events(wh)[100].state == "claimed" and outcomes(wh, 100) == []
    assert outcomes(wh, 101) == ["skipped:quarantined"] and wh.pve.posts == []


@pytest.mark.parametrize("make", ["bulk"], indirect=True)
def test_an_attempt_to_settle_keeps_the_event_for_the_pool(make: Any) -> None:
    wh = make(enabled=False)
    wh.pve.add(100)
    notify(wh, 100)
    with wh.store.tx() as session:
        incident = session.scalars(select(Incident)).one()
        session.add(Action(at=time.time(), cluster="lab", vmid=100, incident_id=incident.id, attempt=1,
                           action="reset", outcome="unknown"))
    ctx = wh.ctx
    assert ctx.remediator.claim(ctx.worker_id, 0, time.time()) == ([], 0)
    assert ctx.remediator.claim(ctx.worker_id, 1, time.time()) == ([events(wh)[100].id], 0)


def test_circuit_breaker_trips_and_recovers(make: Any) -> None:
    wh = make(max_hung_fraction=0.3, circuit_min_hung=2, retry_interval="0s")
    wh.pve.guests.clear()
    for vmid in range(100, 105):  # two of five hung: 40 % > 30 %
        wh.pve.add(vmid)
    both = firing(100)
    both["alerts"] += firing(101)["alerts"]
    assert wh.client.post("/alerts", json=both, headers=auth()).status_code == 200
    wh.process()
    assert wh.pve.posts == []
    assert outcomes(wh, 100) == ["skipped:circuit-open"] and outcomes(wh, 101) == ["skipped:circuit-open"]
    assert sample(wh, "vmhealth_remediation_circuit_open", cluster="lab") == 1
    wh.send(firing(101, status="resolved"))
    wh.send(firing(100))
    assert wh.pve.resets(100) == 1
    assert sample(wh, "vmhealth_remediation_circuit_open", cluster="lab") == 0


def test_rate_limit_trips_and_recovers(make: Any) -> None:
    wh = make(max_actions_per_hour=1, retry_interval="0s")
    wh.pve.add(100)
    wh.pve.add(101)
    wh.send(firing(100))
    wh.send(firing(101))
    assert outcomes(wh, 101) == ["skipped:rate-limited"] and wh.pve.resets() == 1
    time_passes(wh, 3601)
    wh.send(firing(101))
    assert wh.pve.resets(101) == 1


def test_receiver_rejects_bad_requests_with_the_reason(make: Any) -> None:
    wh = make()
    assert wh.client.post("/alerts", json=firing(100)).status_code == 401
    assert wh.client.post("/alerts", json=firing(100), headers=auth("wrong")).status_code == 401
    assert wh.client.post("/alerts", data="{", headers=auth(), content_type="application/json").status_code == 400
    bad = firing(100)
    bad["alerts"][0]["startsAt"] = "yesterday"
    response = wh.client.post("/alerts", json=bad, headers=auth())
    assert response.status_code == 400 and "alerts[0].startsAt" in response.get_json()["error"]
    bad = firing(100)
    bad["version"] = "3"
    assert "version" in wh.client.post("/alerts", json=bad, headers=auth()).get_json()["error"]
    bad = firing(100)
    bad["alerts"][0]["labels"]["vmid"] = "abc"
    assert "labels.vmid" in wh.client.post("/alerts", json=bad, headers=auth()).get_json()["error"]
    assert sample(wh, "vmhealth_webhook_notifications_total", status="unknown", result="unauthorized") == 2


def test_alerts_without_an_action_label_are_recorded_but_not_acted_on(make: Any) -> None:
    wh = make()
    wh.pve.add(100)
    body = firing(100)
    del body["alerts"][0]["labels"]["action"]
    assert wh.send(body).get_json()["alerts"][0]["result"] == "ignored"
    assert wh.pve.posts == []
    assert sample(wh, "vmhealth_webhook_notifications_total", status="firing", result="ignored") == 1


def test_manual_reset_goes_through_the_policy_and_force_lifts_only_the_limit(make: Any) -> None:
    wh = make(max_attempts=1, cooldown="0s")
    wh.pve.add(100)
    assert wh.client.post("/api/vms/100/reset", json={"reason": "x"}).status_code == 401
    response = wh.client.post("/api/vms/100/reset", json={"reason": "Manual reset via dashboard"},
                              headers=auth(ADMIN))
    assert response.status_code == 200
    assert response.get_json() == {"success": True, "message": "Reset command sent to vm100", "resetAttempts": 1}
    assert history(wh, 100)[0]["actor"] == "manual:admin"
    # Locked: refused like an alert would be, with the reason.
    wh.pve.guests[100].update(lock="backup", uptime=86400)
    response = wh.client.post("/api/vms/100/reset", json={}, headers=auth(ADMIN))
    assert response.status_code == 409 and response.get_json()["outcome"] == "skipped:locked"
    # An alert's incident runs out of attempts; force still resets, recorded as forced.
    del wh.pve.guests[100]["lock"]
    wh.pve.exitstatus = ["VM is locked (backup)"]
    wh.send(firing(100))
    assert outcomes(wh, 100)[-1] == "failed"
    assert wh.client.post("/api/vms/100/reset", json={}, headers=auth(ADMIN)).get_json()["outcome"] in (
        "skipped:quarantined", "skipped:max-attempts")
    response = wh.client.post("/api/vms/100/reset", json={"force": True, "reason": "on call"}, headers=auth(ADMIN))
    assert response.get_json()["success"] is True and response.get_json()["resetAttempts"] == 2
    assert history(wh, 100)[0]["forced"] is True
    assert wh.client.post("/api/vms/100/reset", json={"force": "yes"}, headers=auth(ADMIN)).status_code == 400
    assert wh.client.post("/api/vms/999/reset", json={}, headers=auth(ADMIN)).status_code == 404


def test_history_endpoints(make: Any) -> None:
    wh = make(retry_interval="0s")
    wh.pve.add(100)
    wh.pve.add(101, lock="backup")
    wh.send(firing(100))
    for _ in range(3):
        wh.send(firing(101))
    original = wh.client.get("/api/vms/100/reset-history", headers=auth(ADMIN)).get_json()
    assert original[0]["success"] is True and original[0]["timestamp"].endswith("Z") and original[0]["reason"]
    page = wh.client.get("/api/resets?limit=2", headers=auth(ADMIN)).get_json()
    assert len(page["resets"]) == 2 and page["next"]
    rest = wh.client.get(f"/api/resets?limit=2&before={page['next']}", headers=auth(ADMIN)).get_json()
    assert {r["id"] for r in rest["resets"]}.isdisjoint({r["id"] for r in page["resets"]})
    skipped = wh.client.get("/api/resets?outcome=skipped&cluster=lab", headers=auth(ADMIN)).get_json()["resets"]
    assert len(skipped) == 3 and all(r["vmid"] == 101 for r in skipped)
    for wildcard in ("%:", "_kipped:", "skipped%:", "s%"):  # LIKE's wildcards are plain characters
        reply = wh.client.get("/api/resets", query_string={"outcome": wildcard}, headers=auth(ADMIN))
        assert reply.get_json()["resets"] == [], wildcard
    assert wh.client.get("/api/resets?since=1h", headers=auth(ADMIN)).get_json()["resets"]
    assert wh.client.get("/api/resets?since=2999-01-01T00:00:00Z", headers=auth(ADMIN)).get_json()["resets"] == []
    response = wh.client.get("/api/resets?limit=0", headers=auth(ADMIN))
    assert response.status_code == 400 and "limit" in response.get_json()["error"]
    assert "since" in wh.client.get("/api/resets?since=soon", headers=auth(ADMIN)).get_json()["error"]


def test_metrics_endpoint_exposes_the_series(make: Any) -> None:
    wh = make()
    wh.pve.add(100)
    wh.send(firing(100))
    text = wh.client.get("/metrics").get_data(as_text=True)
    for name in ("vmhealth_remediation_actions_total", "vmhealth_remediation_incident_attempts",
                 "vmhealth_webhook_notifications_total", "vmhealth_remediation_circuit_open",
                 "vmhealth_remediation_queue_depth", "vmhealth_remediation_action_latency_seconds_bucket"):
        assert name in text, name
    assert json.loads(wh.client.get("/").get_data())["service"] == "vmhealth webhook"


def test_action_counters_start_at_zero_so_the_first_reset_counts_in_increase(make: Any) -> None:
    wh = make()
    for result in ("success", "failed", "unknown"):
        assert sample(wh, "vmhealth_remediation_actions_total", cluster="lab", action="reset", result=result) == 0
    wh.pve.add(100)
    wh.send(firing(100))
    assert sample(wh, "vmhealth_remediation_actions_total", cluster="lab", action="reset", result="success") == 1


def test_escalation_stops_and_starts_after_a_failed_reset_but_not_for_ha_guests(make: Any) -> None:
    wh = make(escalate=True)
    wh.pve.add(100)
    wh.pve.add(101, ha={"managed": 1, "state": "started"})
    wh.pve.exitstatus = ["VM 100 qmp command 'system_reset' failed - got timeout"]
    wh.send(firing(100))
    assert wh.pve.posts == [("pve1", 100, "reset"), ("pve1", 100, "stop"), ("pve1", 100, "start")]
    assert outcomes(wh, 100) == ["failed", "success"] and history(wh, 100)[0]["action"] == "stop+start"
    wh.pve.exitstatus = ["VM 101 qmp command 'system_reset' failed - got timeout"]
    wh.send(firing(101))
    assert [p for p in wh.pve.posts if p[1] == 101] == [("pve1", 101, "reset")]
    assert outcomes(wh, 101) == ["failed"]


def test_deep_nesting_is_a_400_on_every_json_route(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    wh = make()
    deep = '{"alerts": ' + "[" * 30_000 + "]" * 30_000 + "}"
    routes = (("/alerts", auth()), ("/api/vms/100/reset", auth(ADMIN)), ("/api/vms/100/release", auth(ADMIN)),
              ("/api/vms/100/close-incident", auth(ADMIN)))
    for path, token in routes:
        reply = wh.client.post(path, data=deep, content_type="application/json", headers=token)
        assert reply.status_code == 400, (path, reply.status_code, reply.get_data(as_text=True)[:200])
    assert "RecursionError" not in caplog.text


def test_failed_authentication_is_counted_by_route_and_reason(make: Any) -> None:
    wh = make()
    page = wh.client.get("/metrics").get_data(as_text=True)

    def count(route: str, reason: str, text: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        return sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples if sample.name == "vmhealth_http_auth_failures_total"
                   and sample.labels == {"route": route, "reason": reason})

    wh.client.post("/alerts", json=firing(100), headers=auth("wrong-token-for-alerts"))
    wh.client.post("/api/vms/100/reset", json={"reason": "x"})
    wh.client.post("/api/vms/100/reset", json={"reason": "x"}, headers=auth(TOKEN))  # Alertmanager's: not admin
    after = wh.client.get("/metrics").get_data(as_text=True)
    assert count("POST /alerts", "wrong", after) - count("POST /alerts", "wrong", page) == 1
    assert count("POST /api/vms/<vmid>/reset", "missing", after) - count("POST /api/vms/<vmid>/reset", "missing",
                                                                          page) == 1
    assert count("POST /api/vms/<vmid>/reset", "wrong", after) - count("POST /api/vms/<vmid>/reset", "wrong",
                                                                        page) == 1


def test_a_runtime_pause_refuses_alerts_but_not_a_persons_reset_and_is_in_the_history(make: Any) -> None:
    wh = make(retry_interval="1s")
    for vmid in (100, 101):
        wh.pve.add(vmid)
    admin = auth(ADMIN)
    assert wh.client.post("/api/remediation/pause", json={"reason": "x"}).status_code == 401
    refused = wh.client.post("/api/remediation/pause", json={}, headers=admin)
    assert refused.status_code == 400 and "reason" in refused.get_json()["error"]
    wrong = wh.client.post("/api/remediation/pause", json={"reason": "r", "cluster": "nope"}, headers=admin)
    assert wrong.status_code == 400 and "'nope' is not configured" in wrong.get_json()["error"]
    paused = wh.client.post("/api/remediation/pause", json={"reason": "storage maintenance", "actor": "ann"},
                            headers=admin)
    assert paused.status_code == 200, paused.get_json()
    assert wh.client.post("/api/remediation/pause", json={"reason": "again"}, headers=admin).status_code == 409
    state = wh.client.get("/api/remediation", headers=admin).get_json()
    assert state["paused"][0]["scope"] == "*" and state["paused"][0]["actor"] == "manual:ann"
    assert sample(wh, "vmhealth_remediation_paused_since_seconds", scope="*") > time.time() - 60
    assert sample(wh, "vmhealth_remediation_pause_alert_after_seconds") == 7200

    wh.send(firing(100))
    assert wh.pve.posts == [] and outcomes(wh, 100) == ["skipped:remediation-paused"]
    row = history(wh, 100)[0]
    assert "paused by manual:ann" in row["error"] and "storage maintenance" in row["error"]
    manual = wh.client.post("/api/vms/101/reset", json={"reason": "I looked at it", "actor": "ann"}, headers=admin)
    assert manual.status_code == 200, manual.get_json()
    assert wh.pve.resets(101) == 1 and wh.pve.resets(100) == 0

    resumed = wh.client.post("/api/remediation/resume", json={"actor": "bob", "reason": "done"}, headers=admin)
    assert resumed.status_code == 200, resumed.get_json()
    assert sample(wh, "vmhealth_remediation_paused_since_seconds", scope="*") is None
    assert wh.client.post("/api/remediation/resume", json={}, headers=admin).status_code == 409
    rows = wh.client.get("/api/resets?limit=1000", headers=admin).get_json()["resets"]
    assert [(r["outcome"], r["actor"]) for r in rows if r["outcome"] in ("paused", "resumed")] == [
        ("resumed", "manual:bob"), ("paused", "manual:ann")]
    time.sleep(1.1)
    wh.send(firing(100))  # Alertmanager's repeat: the guest is acted on now
    assert outcomes(wh, 100)[-1] == "success" and wh.pve.resets(100) == 1


def test_a_pause_of_one_cluster_leaves_the_others_alone(make: Any) -> None:
    wh = make()
    wh.pve.add(100)
    admin = auth(ADMIN)
    assert wh.client.post("/api/remediation/pause", json={"reason": "r", "cluster": "lab"},
                          headers=admin).status_code == 200
    wh.send(firing(100))
    assert outcomes(wh, 100) == ["skipped:remediation-paused"]
    assert "cluster lab" in history(wh, 100)[0]["error"]
