"""End to end: when most guests of a cluster go silent at once, the monitoring path broke, not the
guests. The real Prometheus fires VMHealthMassHeartbeatLoss before VMHung can fire, the real
Alertmanager inhibits VMHung with it, and the simulator receives no reset at all."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import binary
from tests.e2e_support import (
    WEBHOOK_SLACK,
    alert_vmids,
    alerts,
    am_alerts,
    describe,
    history,
    latency_bound,
    settings,
    settled,
    tasks_since,
)
from vmhealth.durations import parse_duration
from vmhealth.processes import wait_for
from vmhealth.stack import Stack, running_stack

pytestmark = [pytest.mark.binaries, pytest.mark.slow]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    binary("prometheus"), binary("alertmanager")
    with running_stack(settings(nodes=2, guests=10), tmp_path) as running:
        yield running


def test_mass_heartbeat_loss_resets_nothing(stack: Stack) -> None:
    """8 of 10 guests silenced at once (healthy guests whose heartbeats stop arriving): the mass-loss alert
    fires, VMHung fires in Prometheus for the silenced guests but is inhibited in Alertmanager, and after
    VMHung's own latency bound and a notification round more, no guest has been reset."""
    settled(stack)
    silenced = set(range(100, 108))
    start = time.time()
    for vmid in sorted(silenced):
        stack.sim.silence(vmid)

    bound, formula = latency_bound(stack)
    wait_for(lambda: alerts(stack, "VMHealthMassHeartbeatLoss", "firing"), bound,
             "VMHealthMassHeartbeatLoss to fire")
    fired_mass = time.time() - start
    # VMHung fires too (the rules see the guests hung): what keeps them alive is the inhibition.
    wait_for(lambda: len(alert_vmids(stack, "VMHung", "firing") & silenced) >= 3, bound + 15, "VMHung to fire")
    fired_hung = time.time() - start
    print(f"\nmass loss fired after {fired_mass:.1f}s, VMHung after {fired_hung:.1f}s (bound {formula})")
    s = stack.settings
    time.sleep(parse_duration(s.group_wait) + 2 * parse_duration(s.group_interval) + WEBHOOK_SLACK)

    assert fired_mass < fired_hung
    assert not tasks_since(stack, start), describe(stack)
    assert not [r for vmid in silenced for r in history(stack, vmid, "success")], describe(stack)
    hung = am_alerts(stack.urls["alertmanager"], "VMHung")
    assert hung and all(a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"] for a in hung), hung
    assert {int(a["labels"]["vmid"]) for a in hung} <= silenced
    [mass] = am_alerts(stack.urls["alertmanager"], "VMHealthMassHeartbeatLoss")
    assert mass["status"]["state"] == "active" and mass["labels"]["cluster"] == stack.cluster
