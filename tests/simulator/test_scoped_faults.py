"""The simulator's Proxmox faults that the reliability tests need beyond the basic ones: faults limited
to the actions (POST), a slow action that is still carried out after the client gave up, and audit
privileges revoked (an ACL removed)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from vmhealth.simulator.ctl import ControlError
from vmhealth.simulator.testing import RunningSimulator, running_simulator
from vmhealth.stack.processes import wait_for


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(nodes=2, guests=4, boot_seconds=0.3, task_seconds=0.1) as running:
        yield running


def call(sim: RunningSimulator, method: str, path: str, timeout: float = 10) -> requests.Response:
    return requests.request(method, f"{sim.base_url}/{path}", headers=sim.auth_header(), verify=sim.ca_bundle,
                            timeout=timeout)


def test_api_down_for_actions_only(sim: RunningSimulator) -> None:
    sim.api_down(503, method="POST")
    assert call(sim, "GET", "cluster/resources").status_code == 200
    refused = call(sim, "POST", "nodes/pve1/qemu/100/status/reset")
    assert refused.status_code == 503 and refused.json()["data"] is None
    assert sim.resets(100) == []
    assert sim.state()["api_down_method"] == "POST"
    sim.api_up()
    assert call(sim, "POST", "nodes/pve1/qemu/100/status/reset").status_code == 200
    assert sim.state()["api_down_method"] is None


def test_a_slow_action_is_carried_out_after_the_client_gave_up(sim: RunningSimulator) -> None:
    sim.latency(1.0, method="POST")
    started = time.monotonic()
    assert call(sim, "GET", "version").status_code == 200
    assert time.monotonic() - started < 0.9  # reads are not delayed
    with pytest.raises(requests.Timeout):
        call(sim, "POST", "nodes/pve2/qemu/101/status/reset", timeout=0.3)
    [task] = wait_for(lambda: sim.resets(101), 10, "the reset the client gave up on")
    assert task["upid"].startswith("UPID:pve2:") and task["exitstatus"] == "OK"
    healed = sim.heal()
    assert healed["latency"] == 0 and healed["latency_method"] is None


def test_revoked_audit_privileges_hide_guests_and_refuse_cluster_status(sim: RunningSimulator) -> None:
    sim.revoke_audit()
    assert call(sim, "GET", "cluster/resources?type=vm").json()["data"] == []
    refused = call(sim, "GET", "cluster/status")
    assert refused.status_code == 403 and refused.json()["message"] == "Permission check failed (/, Sys.Audit)\n"
    sim.revoke_power()
    sim.restore_audit()  # one privilege back, the other still revoked
    assert call(sim, "GET", "cluster/status").status_code == 200
    assert len(call(sim, "GET", "cluster/resources?type=vm").json()["data"]) == 4
    assert call(sim, "POST", "nodes/pve1/qemu/100/status/reset").status_code == 403
    assert sim.heal()["power_revoked"] is False


def test_bad_method_filters_are_refused(sim: RunningSimulator) -> None:
    with pytest.raises(ControlError, match="method must be GET or POST"):
        sim.latency(1, method="DELETE")
    with pytest.raises(ControlError, match="method must be GET or POST"):
        sim.api_down(500, method="PUT")
    assert sim.state()["latency"] == 0 and sim.state()["api_down"] is None
