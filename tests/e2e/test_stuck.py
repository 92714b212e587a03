"""End to end: a guest that stays hung however often it is reset. Alertmanager's repeats drive one
attempt per cooldown until `max_attempts`; then the webhook quarantines the guest, the real Prometheus
fires VMResetFailed from the webhook's /metrics, and no further reset reaches the simulator."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.e2e import alerts, describe, history, latency_bound, settled, tasks_since, whole_stack
from vmhealth.durations import parse_duration
from vmhealth.stack.processes import wait_for
from vmhealth.stack.running import Stack

pytestmark = [pytest.mark.binaries, pytest.mark.slow]

MAX_ATTEMPTS = 2
POLICY = {"max_attempts": MAX_ATTEMPTS, "cooldown": "2s", "max_cooldown": "2s", "retry_interval": "2s"}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with whole_stack(tmp_path, nodes=2, guests=6, policy=POLICY, repeat_interval="4s") as running:
        yield running


def test_a_stuck_guest_is_quarantined_after_max_attempts_and_vmresetfailed_fires(stack: Stack) -> None:
    settled(stack)
    vmid, start = 102, time.time()
    stack.sim.stuck(vmid)
    bound, _ = latency_bound(stack)
    repeat = parse_duration(stack.settings.repeat_interval)

    def reset_failed() -> bool:
        return any(a["labels"].get("vmid") == str(vmid) for a in alerts(stack, "VMResetFailed", "firing"))
    try:
        wait_for(reset_failed, bound + MAX_ATTEMPTS * (repeat + 5) + 20, "VMResetFailed to fire")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{describe(stack)}") from None
    print(f"\nVMResetFailed fired {time.time() - start:.1f}s after the guest got stuck")

    tasks = tasks_since(stack, start)
    assert [(t["vmid"], t["type"]) for t in tasks] == [(vmid, "qmreset")] * MAX_ATTEMPTS, describe(stack)
    assert all("system_reset' failed - got timeout" in t["exitstatus"] for t in tasks), tasks
    failed = sorted(history(stack, vmid, "failed"), key=lambda r: r["attempt"])
    assert [r["attempt"] for r in failed] == list(range(1, MAX_ATTEMPTS + 1)), describe(stack)
    assert {r["upid"] for r in failed} == {t["upid"] for t in tasks}

    # Alertmanager keeps repeating the still-firing VMHung; the quarantine refuses every one of them.
    wait_for(lambda: history(stack, vmid, "skipped:quarantined"), 3 * repeat + 10, "a refused repeat")
    assert len(tasks_since(stack, start)) == MAX_ATTEMPTS, describe(stack)
    assert stack.query(f'vmhealth_remediation_quarantined{{vmid="{vmid}"}} == 1')
