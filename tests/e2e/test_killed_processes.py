"""Processes killed with SIGKILL in the middle of an incident, on the whole product (`vmhealth.stack`:
the simulator with its agents, `vmhealth exporter` and `vmhealth webhook`, the real Prometheus and
Alertmanager). No shutdown handler runs, as after a crash or the OOM killer; each process is started
again on the same data. After each: the hung guest is reset exactly once, its decision is in the
history, and no other guest is alerted on or reset (no alert storm).

One stack serves the module; reset tasks take `TASK_SECONDS`, so a test can kill the webhook while
its reset runs. Each test uses its own guest, waits until no guest is hung, and heals its faults.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.helpers.e2e import (
    alert_vmids,
    describe,
    ever_hung,
    history,
    latency_bound,
    settled,
    tasks_since,
    wait_for_reset,
    whole_stack,
)
from vmhealth.stack.processes import wait_for
from vmhealth.stack.running import Stack

pytestmark = [pytest.mark.binaries, pytest.mark.slow, pytest.mark.usefixtures("healed")]

TASK_SECONDS = 6.0  # how long the simulator's reset task runs
LEASE = 6  # webhook.claim_lease: a dead process's claim is taken over after this many seconds


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with whole_stack(tmp_path_factory.mktemp("reliability-process"), guests=24, agent_interval=1.0,
                     sim_task_seconds=TASK_SECONDS, webhook={"claim_lease": f"{LEASE}s"},
                     # Prometheus re-sends firing alerts every 1m by default; scaled like the rules
                     prometheus_args=["--rules.alert.resend-delay=5s"]) as running:
        yield running


def firing_since(stack: Stack, since: float) -> set[tuple[str, str]]:
    """(alertname, vmid) of every alert that was firing at any evaluation since `since`."""
    window = max(1, int(time.time() - since + 0.999))
    result = stack.query(f'max by (alertname, vmid) (max_over_time(ALERTS{{alertstate="firing"}}[{window}s]))')
    return {(r["metric"]["alertname"], r["metric"].get("vmid", "")) for r in result}


def assert_one_reset_and_quiet(stack: Stack, vmid: int, start: float, judged_hung: bool = True,
                               may_fire: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """The guest was reset exactly once with a successful history row; no other guest was alerted on
    or reset; and (`judged_hung`) no other guest was ever judged hung by the recording rule."""
    wait_for(lambda: history(stack, vmid, "resolved"), 90, f"the incident of guest {vmid} to resolve")
    tasks = tasks_since(stack, start)
    assert [t["vmid"] for t in tasks] == [vmid], describe(stack)
    # The rebooted guest may report, and its alert resolve, while the webhook still follows the task.
    attempts = wait_for(lambda: [r for r in history(stack, vmid) if r["attempt"] is not None]
                        if all(r["outcome"] != "pending" for r in history(stack, vmid)) else None,
                        30, f"the reset of guest {vmid} to be followed to its end")
    assert [(r["attempt"], r["outcome"], r["upid"]) for r in attempts] == [(1, "success", tasks[0]["upid"])], \
        describe(stack)
    others = {r["vmid"] for r in stack.resets() if r["vmid"] != vmid and r["time"] >= _iso(start)}
    assert others == set(), describe(stack)
    hung = ever_hung(stack, time.time() - start)
    if judged_hung:
        assert hung == {vmid}, describe(stack)
    firing = firing_since(stack, start)
    assert firing - {(name, "") for name in may_fire} <= {("VMHung", str(vmid)), ("VMHeartbeatStale", str(vmid))}, \
        firing
    print(f"\nobserved: resets {len(tasks)} ({tasks[0]['upid']}), attempt rows {len(attempts)} "
          f"({attempts[0]['outcome']}), firing alerts {sorted(firing)}, judged hung at some evaluation: "
          f"{len(hung)} guest(s)")
    return tasks[0]


def _iso(seconds: float) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_webhook_killed_while_its_reset_runs(stack: Stack) -> None:
    """SIGKILL while the reset task runs in Proxmox: the restarted webhook does not reset again and
    settles the interrupted attempt from the node's task list."""
    start = settled(stack)
    vmid = 103
    stack.sim.hang(vmid)
    bound, _ = latency_bound(stack)
    task = wait_for_reset(stack, vmid, start, bound + 30)
    wait_for(lambda: [r for r in history(stack, vmid) if r["attempt"] == 1], 10, "the attempt's history row")
    stack.kill("webhook")
    [running] = [t for t in stack.sim.tasks(vmid) if t["upid"] == task["upid"]]
    assert running["status"] == "running", running  # killed while the reset was still in flight
    [row] = [r for r in stack.sim.tasks(vmid) if r["upid"] == task["upid"]]
    stack.start("webhook")
    killed_at = time.time()
    settled_row = wait_for(lambda: [r for r in history(stack, vmid) if r["attempt"] == 1
                                    and r["outcome"] != "pending"], LEASE + 60, "the interrupted attempt to settle")
    print(f"\ninterrupted attempt settled {time.time() - killed_at:.1f}s after the restart: "
          f"{settled_row[0]['outcome']}")
    assert row["upid"] == task["upid"]
    assert_one_reset_and_quiet(stack, vmid, start)


def heartbeat_of(stack: Stack, vmid: int) -> float:
    reply = requests.get(f"{stack.urls['exporter']}/metrics", timeout=10).text
    for line in reply.splitlines():
        if line.startswith("vmhealth_heartbeat_timestamp_seconds{") and f'vmid="{vmid}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no heartbeat series for guest {vmid}")


def test_exporter_killed_during_ingest(stack: Stack) -> None:
    """SIGKILL while 24 agents report every second and one guest is already stale: after the restart the
    stale guest keeps its old heartbeat time (write-behind store), is reset once, and no healthy
    guest is judged hung."""
    start = settled(stack)
    vmid = 106
    stack.sim.hang(vmid)
    bound, _ = latency_bound(stack)
    wait_for(lambda: vmid in alert_vmids(stack, "VMHeartbeatStale"), bound, f"guest {vmid} to be stale")
    before = heartbeat_of(stack, vmid)
    reports = stack.sim.agents()["results"]
    stack.kill("exporter")
    down = time.monotonic()
    stack.start("exporter")
    print(f"\nexporter down for {time.monotonic() - down:.1f}s (agents had sent {reports})")
    assert heartbeat_of(stack, vmid) == before  # loaded from the database, not forgotten nor renewed
    assert_one_reset_and_quiet(stack, vmid, start)


def test_prometheus_killed_while_a_guest_is_hung(stack: Stack) -> None:
    """SIGKILL of Prometheus while VMHung is pending: after the restart on the same data the guest is
    reset once and the scrape gap makes no other guest hung."""
    start = settled(stack)
    vmid = 109
    stack.sim.hang(vmid)
    bound, _ = latency_bound(stack)
    wait_for(lambda: vmid in alert_vmids(stack, "VMHung", "pending"), bound, f"VMHung of guest {vmid} pending")
    stack.kill("prometheus")
    down = time.monotonic()
    time.sleep(4)
    stack.start("prometheus")
    print(f"\nPrometheus down for {time.monotonic() - down:.1f}s")
    wait_for_reset(stack, vmid, start, bound + 30)
    # Its first evaluations after the restart may run before the first scrape, on heartbeat samples older
    # than the silent threshold: every guest looks silent at once, which is a mass heartbeat loss (and is
    # one: Prometheus saw nothing). It holds VMHung; it may fire, and resets nothing.
    assert_one_reset_and_quiet(stack, vmid, start, judged_hung=False, may_fire={"VMHealthMassHeartbeatLoss"})


def test_alertmanager_killed_when_the_alert_fires(stack: Stack) -> None:
    """SIGKILL of Alertmanager while VMHung is pending, so that Prometheus' notification of the firing
    alert fails; after the restart Prometheus re-sends it and the guest is reset once."""
    start = settled(stack)
    vmid = 112
    stack.sim.hang(vmid)
    bound, _ = latency_bound(stack)
    wait_for(lambda: vmid in alert_vmids(stack, "VMHung", "pending"), bound, f"VMHung of guest {vmid} pending")
    stack.kill("alertmanager")
    wait_for(lambda: vmid in alert_vmids(stack, "VMHung", "firing"), bound, f"VMHung of guest {vmid} firing")
    time.sleep(3)
    assert tasks_since(stack, start, vmid) == []  # nobody could tell the webhook
    stack.start("alertmanager")
    task = wait_for_reset(stack, vmid, start, bound + 30)
    print(f"\nreset {task['requested_at'] - start:.1f}s after the hang")
    assert_one_reset_and_quiet(stack, vmid, start)


def duplicates(stack: Stack) -> float:
    """Firing notifications the webhook recognised as already recorded (this webhook process's count)."""
    text = requests.get(f"{stack.urls['webhook']}/metrics", timeout=10).text
    prefix = 'vmhealth_webhook_notifications_total{result="duplicate",status="firing"}'
    alt = 'vmhealth_webhook_notifications_total{status="firing",result="duplicate"}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith((prefix, alt)))


def test_alertmanager_killed_after_notifying_does_not_reset_twice(stack: Stack) -> None:
    """SIGKILL of Alertmanager after it notified the webhook: its notification log dies with it, so
    after the restart it notifies again; the webhook records a duplicate and resets nothing twice."""
    start = settled(stack)
    vmid = 115
    stack.sim.stuck(vmid)  # the reset does not help: VMHung stays firing through the restart
    bound, _ = latency_bound(stack)
    task = wait_for_reset(stack, vmid, start, bound + 30)
    wait_for(lambda: [r for r in history(stack, vmid) if r["attempt"] == 1 and r["outcome"] != "pending"], 30,
             "the attempt's outcome")
    before = duplicates(stack)
    stack.kill("alertmanager")
    stack.start("alertmanager")
    wait_for(lambda: duplicates(stack) > before, 90, "Alertmanager to notify the webhook again")
    time.sleep(3)
    assert [t["upid"] for t in tasks_since(stack, start)] == [task["upid"]], describe(stack)
    attempts = [(r["attempt"], r["outcome"]) for r in history(stack, vmid) if r["attempt"] is not None]
    assert attempts == [(1, "failed")], describe(stack)
    stack.sim.heal()
    wait_for(lambda: history(stack, vmid, "resolved"), 90, f"the incident of guest {vmid} to resolve")
    assert [t["upid"] for t in tasks_since(stack, start)] == [task["upid"]], describe(stack)
    firing = firing_since(stack, start)
    assert firing <= {("VMHung", str(vmid)), ("VMHeartbeatStale", str(vmid))}, firing
    print(f"\nobserved: duplicates recorded after the restart {duplicates(stack) - before:g}; resets 1 "
          f"(attempt 1 failed: the guest was stuck); firing alerts {sorted(firing)}")
