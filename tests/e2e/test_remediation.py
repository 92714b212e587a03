"""End to end, one stack for three scenarios: the simulator over HTTPS with simulated agents, `vmhealth
exporter` and `vmhealth webhook`, the real Prometheus (the repository's rules, `for:` scaled) and the real
Alertmanager (the repository's routes and inhibitions). Assertions are on what the simulator received
(reset tasks) and what the webhook recorded, never on the code's own idea of what it did.

Each test uses its own guests, waits at its start until no guest is hung, and switches its faults off
at the end, so the tests do not depend on their order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.helpers.e2e import (
    alert_vmids,
    alerts,
    describe,
    ever_alerted,
    ever_hung,
    history,
    latency_bound,
    rule_for,
    settled,
    tasks_since,
    wait_for_reset,
    whole_stack,
)
from vmhealth.durations import parse_duration
from vmhealth.stack.processes import wait_for
from vmhealth.stack.running import Stack

pytestmark = [pytest.mark.binaries, pytest.mark.slow, pytest.mark.usefixtures("healed")]

# 3 nodes, 12 guests: pve1 holds 100 103 106 109, pve2 101 104 107 110, pve3 102 105 108 111.
PVE3_GUESTS = {102, 105, 108, 111}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with whole_stack(tmp_path_factory.mktemp("e2e-stack")) as running:
        yield running


def measure_reset(stack: Stack, vmid: int, since: float) -> tuple[dict, float, str]:
    """Wait for the hung guest's reset; return the task, the latency from its last heartbeat, and a
    message with both and the bound."""
    bound, formula = latency_bound(stack)
    # Once VMHung is pending the guest has been silent for the stale timeout: no heartbeat is in flight.
    wait_for(lambda: vmid in alert_vmids(stack, "VMHung"), bound, f"VMHung of guest {vmid} to be pending")
    last = stack.sim.guest(vmid)["agent_last_heartbeat"]
    assert last is not None and last <= since + 5, f"guest {vmid} never reported, or reported while hung: {last}"
    # The exporter's heartbeat time is its receive time: the same moment, as Prometheus sees it (after a
    # restart of the exporter, once Prometheus scraped it again: the failed scrape made the series stale).
    query = f'max(vmhealth_heartbeat_timestamp_seconds{{vmid="{vmid}"}})'
    [seen] = wait_for(lambda: stack.query(query), 15, f"Prometheus to have guest {vmid}'s heartbeat time")
    assert abs(float(seen["value"][1]) - last) < 1, (seen, last)
    task = wait_for_reset(stack, vmid, since, bound + 30)
    latency = task["requested_at"] - last
    message = f"guest {vmid}: last heartbeat -> reset request {latency:.1f}s (bound {formula})"
    print(f"\n{message}")
    return task, latency, message


def active_at(stack: Stack, vmid: int) -> str:
    """Since when Prometheus has had VMHung for the guest (its `activeAt`)."""
    [alert] = [a for a in alerts(stack, "VMHung") if a["labels"]["vmid"] == str(vmid)]
    return alert["activeAt"]


def wait_resolved(stack: Stack, vmid: int) -> None:
    """The guest reports again, VMHung resolves, Alertmanager says so, and the webhook closes the incident."""
    try:
        wait_for(lambda: history(stack, vmid, "resolved"), 90, f"the incident of guest {vmid} to be resolved")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{describe(stack)}") from None


def test_a_hung_guest_is_reset_exactly_once_within_the_latency_bound(stack: Stack) -> None:
    """Bound, from the settings used: stale_timeout + for(VMHung, scaled) + 2 x (scrape + evaluation)
    + group_wait + agent interval (+10 % jitter) + poll interval + 5 s for the webhook's Proxmox calls
    (10 + 15 + 8 + 1 + 2.2 + 2 + 5 = 43.2 s with the defaults). Never sooner than stale_timeout +
    for(VMHung): a reset before that would be premature."""
    settled(stack)
    vmid, start = 100, time.time()
    stack.sim.hang(vmid)
    task, latency, message = measure_reset(stack, vmid, start)

    bound, _ = latency_bound(stack)
    earliest = parse_duration(stack.settings.stale_timeout) + rule_for(stack, "VMHung")
    assert earliest - 0.5 <= latency <= bound, message
    wait_resolved(stack, vmid)
    [done] = tasks_since(stack, start)
    assert (done["upid"], done["type"], done["exitstatus"]) == (task["upid"], "qmreset", "OK"), describe(stack)
    successes = history(stack, vmid, "success")
    assert [(r["upid"], r["attempt"], r["actor"]) for r in successes] == [(task["upid"], 1, "alertmanager")]
    assert not stack.sim.guest(vmid)["hung"]


def test_stopped_locked_paused_and_offline_node_guests_are_never_reset(stack: Stack) -> None:
    """Each of these guests is silent, and none is hung: stopped (meant to be off), locked by a backup
    (and frozen meanwhile), paused, or on an offline node. A hung guest beside them is the control: once
    it has been reset, the silent ones have had as long to be reset wrongly, plus a margin."""
    settled(stack)
    start = time.time()
    stopped, locked, paused, control = 101, 104, 107, 103
    stack.sim.stop_guest(stopped)
    stack.sim.lock(locked, "backup")
    stack.sim.hang(locked)
    stack.sim.pause(paused)
    stack.sim.node_offline("pve3")
    stack.sim.hang(control)

    measure_reset(stack, control, start)
    s = stack.settings
    time.sleep(2 * (parse_duration(s.scrape_interval) + parse_duration(s.evaluation_interval))
               + parse_duration(s.group_wait))
    window = time.time() - start

    never = {stopped, locked, paused} | PVE3_GUESTS
    assert not [t for t in tasks_since(stack, start) if t["vmid"] in never], describe(stack)
    # VMHung of the paused guest may be pending for one poll: the exporter reads qmpstatus only of guests
    # whose heartbeat went stale. Its `for:` is what keeps that from ever firing.
    assert not ever_alerted(stack, "VMHung", window, "firing") & never, describe(stack)
    assert not ever_alerted(stack, "VMHung", window) & (never - {paused}), describe(stack)
    assert not [r for vmid in never for r in history(stack, vmid) if not r["outcome"].startswith("skipped")]
    # They were silent, and seen so: the locked and the paused guest have stale heartbeats, the node is down.
    assert {locked, paused} <= ever_alerted(stack, "VMHeartbeatStale", window), describe(stack)
    assert [a["labels"]["node"] for a in alerts(stack, "ProxmoxNodeDown")] == ["pve3"]
    assert [t["vmid"] for t in tasks_since(stack, start)] == [control]


def test_an_exporter_restart_neither_loses_a_hung_guest_nor_invents_one(stack: Stack) -> None:
    """The exporter is restarted while a guest hangs (VMHung already pending): the guest is still reset,
    once; every other guest was healthy throughout and is neither judged hung nor reset."""
    settled(stack)
    vmid, start = 106, time.time()
    stack.sim.hang(vmid)
    bound, _ = latency_bound(stack)
    wait_for(lambda: vmid in alert_vmids(stack, "VMHung", "pending"), bound, f"VMHung of guest {vmid} pending")
    pending_since = active_at(stack, vmid)
    began = time.monotonic()
    stack.restart("exporter")
    restart = time.monotonic() - began
    wait_for(lambda: vmid in alert_vmids(stack, "VMHung", "firing"), bound + restart,
             f"VMHung of guest {vmid} to fire")
    # A restart shorter than the scrape interval leaves the alert pending from where it was; one that
    # misses a scrape makes the series stale, and VMHung's `for:` starts again once the exporter is back.
    kept = active_at(stack, vmid) == pending_since
    print(f"\nexporter restart took {restart:.1f}s; VMHung {'kept' if kept else 'restarted'} its pending time")
    task, latency, message = measure_reset(stack, vmid, start)
    allowance = 5 if kept else restart + rule_for(stack, "VMHung") + 5
    assert latency <= bound + allowance, message
    wait_resolved(stack, vmid)
    assert [t["upid"] for t in tasks_since(stack, start)] == [task["upid"]], describe(stack)
    assert len(history(stack, vmid, "success")) == 1
    assert ever_hung(stack, time.time() - start) == {vmid}, describe(stack)
