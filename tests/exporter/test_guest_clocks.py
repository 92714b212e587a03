"""Guests whose clocks are hours off change nothing: the exporter takes the heartbeat time from its own
clock when the report arrives, so on the whole stack a guest three hours ahead and one three hours
behind stay healthy (no alert, no reset) while a hung guest beside them is still found and reset.

The two skewed guests' simulated agents are silenced and the test sends their heartbeats instead,
the original agent's payload with `timestamp` shifted, at the same interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers.e2e import describe, ever_alerted, ever_hung, latency_bound, settings, settled, wait_for_reset
from tests.helpers.requirements import binary
from vmhealth.keys import derive_vm_key
from vmhealth.stack.running import AGENT_KEY, Stack, running_stack

pytestmark = [pytest.mark.binaries, pytest.mark.slow]

SKEW = {100: 3 * 3600, 101: -3 * 3600}  # seconds each guest's clock is off
HUNG = 102


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    binary("prometheus"), binary("alertmanager")
    with running_stack(settings(guests=12, agent_interval=1.0), tmp_path) as running:
        yield running


class SkewedAgents:
    """Heartbeats for the SKEW guests every second, each stamped with its guest's wrong clock."""

    def __init__(self, stack: Stack):
        self.url = f"{stack.urls['exporter']}/api/health/report"
        self.nodes = {vmid: stack.sim.guest(vmid)["node"] for vmid in SKEW}
        self.cluster = stack.cluster
        self.replies: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SkewedAgents:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                for vmid, skew in SKEW.items():
                    body = {"hostname": f"skewed-{vmid}", "vmid": str(vmid), "node": self.nodes[vmid],
                            "status": "running", "cpuUsage": 5.0, "ramUsage": 512, "ramTotal": 2048,
                            "diskUsage": 1000, "diskTotal": 10000, "uptime": 3600,
                            "timestamp": int(time.time() + skew), "cluster": self.cluster}
                    try:
                        key = derive_vm_key(AGENT_KEY, self.cluster, vmid)
                        reply = session.post(self.url, json=body, headers={"X-API-Key": key}, timeout=5)
                        self.replies.append(reply.status_code)
                    except requests.RequestException:
                        self.replies.append(0)
                self._stop.wait(1.0)


def heartbeats(stack: Stack) -> dict[int, float]:
    text = requests.get(f"{stack.urls['exporter']}/metrics", timeout=10).text
    found = {}
    for line in text.splitlines():
        if line.startswith("vmhealth_heartbeat_timestamp_seconds{"):
            vmid = int(line.split('vmid="', 1)[1].split('"', 1)[0])
            found[vmid] = float(line.rsplit(" ", 1)[1])
    return found


def test_guest_clocks_hours_off_change_nothing(stack: Stack) -> None:
    start = settled(stack)
    for vmid in SKEW:
        stack.sim.silence(vmid)
    with SkewedAgents(stack) as agents:
        stack.sim.hang(HUNG)
        bound, _ = latency_bound(stack)
        # The hung guest beside them is found as usual; by then a skewed guest judged by its own clock
        # (101, three hours behind) would have been stale as long and hung as long as 102.
        wait_for_reset(stack, HUNG, start, bound + 30)
        time.sleep(5)  # a few more evaluations
        seen = heartbeats(stack)
        now = time.time()
    assert agents.replies and set(agents.replies) == {200}, sorted(set(agents.replies))
    for vmid in SKEW:
        assert abs(seen[vmid] - now) < 10, (vmid, seen[vmid] - now)  # receive time, not the guest's clock
    window = time.time() - start
    assert ever_alerted(stack, "VMHeartbeatStale", window) == {HUNG}, describe(stack)
    assert ever_alerted(stack, "VMHung", window) == {HUNG}, describe(stack)
    assert ever_hung(stack, window) == {HUNG}, describe(stack)
    assert {t["vmid"] for t in stack.sim.resets() if t["requested_at"] >= start} == {HUNG}
    assert {r["vmid"] for r in stack.resets()} <= {HUNG}
    print(f"\nobserved: skewed guests' heartbeat time - now: "
          f"{', '.join(f'{v}: {seen[v] - now:+.1f}s' for v in SKEW)}; {len(agents.replies)} reports all 200; "
          f"alerts only for {HUNG}; resets only {HUNG}")
