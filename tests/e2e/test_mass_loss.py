"""End to end: a guest that still works is never reset, whatever happened to its heartbeats.

One stack (real Prometheus and Alertmanager, the simulator's guests doing disk and network I/O),
three situations in turn, each healed before the next (the mass freeze first, see its test):
- the vmhealth agent dies in two guests that keep working, one with a QEMU guest agent and one
  without, while a third guest really hangs: the hung one is reset once, the two are not, and
  VMAgentSilent fires for them instead;
- every heartbeat of most guests stops at once (the path to the exporter broke) while the guests
  keep working: VMHealthMassHeartbeatLoss fires, nothing is reset;
- most guests freeze at once: the mass-loss rule holds VMHung inside Prometheus, nothing is reset.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.helpers.e2e import (
    WEBHOOK_SLACK,
    alert_vmids,
    alerts,
    am_alerts,
    describe,
    ever_alerted,
    ever_hung,
    history,
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
MOST = set(range(100, 108))  # 8 of the 10 guests
# Guests whose silence is seen before their heartbeat is stale: the mass-loss hold is ahead of VMHung.
SILENT_BEFORE_STALE = ("cluster_vmid:vmhealth_heartbeat_silent_after:seconds < on (cluster) group_left () "
                       "cluster:vmhealth_config_stale_timeout_seconds:max")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with whole_stack(tmp_path_factory.mktemp("stack"), nodes=2, guests=10) as running:
        yield running


@pytest.fixture
def healed(stack: Stack) -> Iterator[Stack]:
    """Each test starts from a calm stack (no mass loss left from the one before) and leaves every fault
    switched off."""
    settled(stack, 90)
    wait_for(lambda: not alerts(stack, "VMHealthMassHeartbeatLoss"), 60, "the last mass loss to resolve")
    yield stack
    stack.sim.heal()


def notification_rounds(stack: Stack) -> float:
    """Long enough for an alert that fired to have reached the webhook and been acted on."""
    s = stack.settings
    return parse_duration(s.group_wait) + 2 * parse_duration(s.group_interval) + WEBHOOK_SLACK


def acted_on(stack: Stack, vmids: set[int], since: float) -> list[dict]:
    """Every decision about these guests from `since` on that named an action (a reset, tried or refused)."""
    from datetime import datetime

    return [r for vmid in vmids for r in history(stack, vmid)
            if r.get("action") and datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp() >= since]


def test_most_guests_freezing_at_once_is_held_in_prometheus(healed: Stack) -> None:
    """8 of 10 guests freeze at once (no heartbeats, no I/O): each looks hung on its own, but so many
    at once is an outage of something they share. The rules hold VMHung in the same evaluation that
    sees the mass loss, so VMHung never even turns pending, and nothing is reset. It runs first: a guest
    whose heartbeats had a gap in the last 10 minutes has a longer measured interval, so it counts as
    silent later (at the latest when stale), and could turn VMHung pending for one evaluation before
    the hold. For the same reason it waits until Prometheus has measured its scrape interval: until then
    (five minutes of samples, about two here) a guest counts as silent only once stale, no sooner than
    VMHung can turn pending, and the hold may come one evaluation late."""
    wait_for(lambda: len(healed.query(SILENT_BEFORE_STALE)) == 10, 240,
             "every guest to be judged silent before it is stale (the measured intervals)")
    most_guests_at_once(healed, healed.sim.hang)


def test_a_dead_agent_in_a_working_guest_is_never_reset(healed: Stack) -> None:
    stack = healed
    with_agent, without_agent, frozen = 102, 104, 106
    stack.sim.set_guest_agent(without_agent, "none")
    start = time.time()
    stack.sim.agent_dead(with_agent)
    stack.sim.agent_dead(without_agent)
    stack.sim.hang(frozen)
    bound, formula = latency_bound(stack)

    task = wait_for_reset(stack, frozen, start, bound)
    print(f"\nthe frozen guest was reset {task['requested_at'] - start:.1f}s after it froze (bound {formula})")
    working = {with_agent, without_agent}
    wait_for(lambda: alert_vmids(stack, "VMAgentSilent", "firing") >= working, bound,
             "VMAgentSilent for both guests whose agent died")
    time.sleep(max(bound - (time.time() - start), 0) + notification_rounds(stack))

    elapsed = time.time() - start
    assert not ever_hung(stack, elapsed) & working, describe(stack)
    assert not ever_alerted(stack, "VMHung", elapsed) & working, describe(stack)
    assert not [t for vmid in working for t in tasks_since(stack, start, vmid)], describe(stack)
    assert not acted_on(stack, working, start), describe(stack)
    assert len(tasks_since(stack, start, frozen)) == 1, describe(stack)
    # Alertmanager: one ticket per guest, VMAgentSilent, with VMHeartbeatStale inhibited by it.
    silent = {int(a["labels"]["vmid"]) for a in am_alerts(stack.urls["alertmanager"], "VMAgentSilent")
              if a["status"]["state"] == "active"}
    assert silent >= working
    stale = [a for a in am_alerts(stack.urls["alertmanager"], "VMHeartbeatStale")
             if int(a["labels"]["vmid"]) in working]
    assert all(a["status"]["state"] == "suppressed" for a in stale), stale

    stack.sim.agent_alive(with_agent)
    stack.sim.agent_alive(without_agent)
    wait_for(lambda: not alert_vmids(stack, "VMAgentSilent") & working, bound, "VMAgentSilent to resolve")
    stack.sim.set_guest_agent(without_agent, "running")


def most_guests_at_once(stack: Stack, fault: Callable[[int], object]) -> float:
    """Switch `fault` on for 8 of the 10 guests at once, wait until the mass-loss alert fires and a reset
    would have come and gone, and check none came: VMHung was never even pending, no decision named an
    action, the simulator received no reset. The time the fault began."""
    start = time.time()
    for vmid in sorted(MOST):
        fault(vmid)
    bound, formula = latency_bound(stack)
    wait_for(lambda: alerts(stack, "VMHealthMassHeartbeatLoss", "firing"), bound,
             "VMHealthMassHeartbeatLoss to fire")
    print(f"\nmass loss fired after {time.time() - start:.1f}s (VMHung's bound {formula})")
    time.sleep(max(bound - (time.time() - start), 0) + notification_rounds(stack))
    elapsed = time.time() - start
    assert not ever_alerted(stack, "VMHung", elapsed), describe(stack)
    assert not tasks_since(stack, start), describe(stack)
    assert not acted_on(stack, MOST, start), describe(stack)
    return start


def test_every_heartbeat_lost_while_guests_work_resets_nothing(healed: Stack) -> None:
    """8 of 10 guests' heartbeats stop arriving at once, the guests keep doing I/O: the mass-loss
    alert fires, no guest is ever judged hung, and nothing is reset."""
    stack = healed
    start = most_guests_at_once(stack, stack.sim.silence)
    assert not ever_hung(stack, time.time() - start), describe(stack)
    [mass] = am_alerts(stack.urls["alertmanager"], "VMHealthMassHeartbeatLoss")
    assert mass["status"]["state"] == "active" and mass["labels"]["cluster"] == stack.cluster
    # The per-guest warnings of the same event are one page: the mass-loss alert inhibits them.
    for name in ("VMAgentSilent", "VMHeartbeatStale"):
        assert all(a["status"]["state"] == "suppressed" for a in am_alerts(stack.urls["alertmanager"], name))
