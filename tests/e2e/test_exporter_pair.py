"""End to end, an exporter pair: two `vmhealth exporter` processes with the same configuration and a
database each, both polling the simulator, every simulated agent sending each heartbeat to both, and
the real Prometheus scraping both as one job. One stack, three situations in turn:
- one replica is killed (SIGKILL) for longer than the stale timeout while a guest hangs: that guest
  is reset once, within the usual bound, and no healthy guest is ever judged hung;
- the killed replica starts again, serving the heartbeat times it persisted, all outdated: no alert,
  no reset;
- a rolling restart of both, one after the other: no alert, no reset.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator

import pytest

from tests.helpers.e2e import (
    alerts,
    describe,
    ever_alerted,
    ever_hung,
    latency_bound,
    settled,
    tasks_since,
    wait_for_reset,
    whole_stack,
)
from vmhealth.durations import parse_duration
from vmhealth.stack.processes import wait_for
from vmhealth.stack.running import Stack

pytestmark = [pytest.mark.binaries, pytest.mark.slow]
GUEST_ALERTS = ("VMHung", "VMHeartbeatStale", "VMAgentSilent", "VMAgentMissing")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with whole_stack(tmp_path_factory.mktemp("pair"), nodes=2, guests=8, exporter_replicas=2) as running:
        yield running


def instance(url: str) -> str:
    return url.removeprefix("http://")


def firing_anywhere(stack: Stack, seconds: float) -> set[str]:
    """Every alert name that was firing at any evaluation in the last `seconds`."""
    window = max(1, int(seconds + 0.999))
    result = stack.query(f'max by (alertname) (max_over_time(ALERTS{{alertstate="firing"}}[{window}s]))')
    return {r["metric"]["alertname"] for r in result}


def replica_caught_up(stack: Stack, url: str) -> bool:
    """Prometheus scrapes the replica and every running guest's heartbeat on it is fresh."""
    stale = parse_duration(stack.settings.stale_timeout)
    target = instance(url)
    up = stack.query(f'up{{job="vmhealth-exporter",instance="{target}"}} == 1')
    running = stack.query("cluster_vmid:vmhealth_pve_guest_running:max == 1")
    fresh = stack.query(f'time() - vmhealth_heartbeat_timestamp_seconds{{instance="{target}"}} < {stale / 2}')
    return bool(up) and len(fresh) >= len(running) > 0


def quiet(stack: Stack, since: float, allowed: frozenset[int] = frozenset()) -> None:
    """Nothing about any guest but `allowed` was pending or firing since `since`, no guest but those was
    judged hung or reset, and the exporter was never all gone."""
    elapsed = time.time() - since
    assert not ever_hung(stack, elapsed) - allowed, describe(stack)
    for name in GUEST_ALERTS:
        assert not ever_alerted(stack, name, elapsed) - allowed, f"{name}\n{describe(stack)}"
    assert "VMHealthMassHeartbeatLoss" not in firing_anywhere(stack, elapsed), describe(stack)
    assert "VMHealthExporterDown" not in firing_anywhere(stack, elapsed), describe(stack)
    assert not [t for t in tasks_since(stack, since) if t["vmid"] not in allowed], describe(stack)


def test_a_killed_replica_leaves_no_blind_spot(stack: Stack) -> None:
    """Replica 2 is SIGKILLed, a guest hangs just after: replica 1 alone sees it hung, on time, once."""
    settled(stack)
    stale = parse_duration(stack.settings.stale_timeout)
    start = time.time()
    stack.kill("exporter-2")
    vmid = 103
    stack.sim.hang(vmid)
    bound, formula = latency_bound(stack)
    task = wait_for_reset(stack, vmid, start, bound)
    print(f"\nwith one replica killed, guest {vmid} was reset {task['requested_at'] - start:.1f}s after it hung "
          f"(bound {formula})")
    wait_for(lambda: alerts(stack, "VMHealthExporterReplicaDown", "firing"), 60, "VMHealthExporterReplicaDown")
    [down] = alerts(stack, "VMHealthExporterReplicaDown", "firing")
    assert down["labels"]["instance"] == instance(stack.exporter_urls[1])
    # the replica stays away for longer than the stale timeout and until the reset guest is back
    time.sleep(max(0.0, start + 2 * stale - time.time()))
    wait_for(lambda: not alerts(stack, "VMHung"), 60, f"VMHung of guest {vmid} to resolve after its reset")
    assert len(tasks_since(stack, start, vmid)) == 1, describe(stack)
    quiet(stack, start, allowed=frozenset({vmid}))
    stack.sim.heal()


def test_the_killed_replica_comes_back_with_outdated_state_and_nothing_fires(stack: Stack) -> None:
    stale = parse_duration(stack.settings.stale_timeout)
    if stack.processes["exporter-2"].running:  # run alone: the test before leaves it killed
        stack.kill("exporter-2")
        time.sleep(2 * stale)
    with sqlite3.connect(stack.workdir / "exporter-2.db") as db:
        persisted = [row[0] for row in db.execute("SELECT last_heartbeat FROM exporter_guest_state")]
    settled(stack)
    start = time.time()
    # what it will serve at start is older than the stale timeout: alone, every guest would look stale
    assert persisted and max(persisted) < start - stale, persisted
    stack.start("exporter-2")
    wait_for(lambda: replica_caught_up(stack, stack.exporter_urls[1]), 60, "the restarted replica to catch up")
    wait_for(lambda: not alerts(stack, "VMHealthExporterReplicaDown"), 60, "VMHealthExporterReplicaDown to resolve")
    time.sleep(max(0.0, start + 2 * stale - time.time()))
    quiet(stack, start)


def test_a_rolling_restart_of_both_replicas_raises_nothing(stack: Stack) -> None:
    stale = parse_duration(stack.settings.stale_timeout)
    settled(stack)
    start = time.time()
    for name, url in zip(("exporter", "exporter-2"), stack.exporter_urls, strict=True):
        stack.restart(name)  # SIGTERM, as an upgrade stops it, then start and wait until ready
        wait_for(lambda url=url: replica_caught_up(stack, url), 60, f"{name} to catch up after its restart")
    time.sleep(max(0.0, start + 2 * stale - time.time()))
    quiet(stack, start)
    assert not {"VMHealthExporterReplicaDown"} & firing_anywhere(stack, time.time() - start), describe(stack)
