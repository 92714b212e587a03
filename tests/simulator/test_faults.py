"""Each fault of the control API does what it says, as a Proxmox client sees it, and goes away again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests

from vmhealth.simulator.ctl import ControlError
from vmhealth.simulator.testing import RunningSimulator, running_simulator
from vmhealth.stack.processes import wait_for


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(nodes=3, guests=6, lxc=3, boot_seconds=0.3, task_seconds=0.1) as running:
        yield running


def call(sim: RunningSimulator, method: str, path: str, role: str = "full") -> requests.Response:
    return requests.request(method, f"{sim.base_url}/{path}", headers=sim.auth_header(role), verify=sim.ca_bundle,
                            timeout=10)


def get(sim: RunningSimulator, path: str) -> Any:
    response = call(sim, "GET", path)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()["data"]


def run_task(sim: RunningSimulator, node: str, kind: str, vmid: int, action: str) -> dict[str, Any]:
    """POST the action and follow its UPID to the end, as the webhook does."""
    response = call(sim, "POST", f"nodes/{node}/{kind}/{vmid}/status/{action}")
    assert response.status_code == 200, response.text
    upid = response.json()["data"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = get(sim, f"nodes/{node}/tasks/{quote(upid, safe='')}/status")
        if status["status"] == "stopped":
            return status
        time.sleep(0.03)
    raise AssertionError(f"{upid} did not finish")


def test_hang_keeps_proxmox_running_but_silences_the_agent_and_a_reset_cures_it(sim: RunningSimulator) -> None:
    before = get(sim, "nodes/pve1/qemu/100/status/current")
    state = sim.hang(100)
    assert state["hung"] and not state["agent_responsive"]
    hung = get(sim, "nodes/pve1/qemu/100/status/current")
    assert (hung["status"], hung["qmpstatus"]) == ("running", "running")
    ping = call(sim, "POST", "nodes/pve1/qemu/100/agent/ping")
    assert (ping.status_code, ping.json()["message"]) == (500, "QEMU guest agent is not running\n")

    status = run_task(sim, "pve1", "qemu", 100, "reset")
    assert status["exitstatus"] == "OK"
    after = sim.guest(100)
    assert not after["hung"] and after["guest_uptime"] <= 1
    assert after["uptime"] >= before["uptime"]  # a reset keeps the QEMU process, so Proxmox's uptime goes on
    deadline = time.monotonic() + 5
    while not sim.guest(100)["agent_responsive"]:  # after the boot delay the agent is back
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [t["type"] for t in sim.resets(100)] == ["qmreset"]


def test_reboot_restarts_the_qemu_process(sim: RunningSimulator) -> None:
    status = run_task(sim, "pve2", "qemu", 101, "reboot")
    assert status["exitstatus"] == "OK"
    assert get(sim, "nodes/pve2/qemu/101/status/current")["uptime"] <= 1


def test_a_hung_guest_ignores_reboot_and_a_stuck_one_fails_reset(sim: RunningSimulator) -> None:
    sim.hang(101)
    assert run_task(sim, "pve2", "qemu", 101, "reboot")["exitstatus"] == "VM quit/powerdown failed - got timeout"
    sim.stuck(100)
    status = run_task(sim, "pve1", "qemu", 100, "reset")
    assert status["exitstatus"] == "VM 100 qmp command 'system_reset' failed - got timeout"
    assert sim.guest(100)["hung"]
    sim.recover(100)
    assert sim.guest(100)["agent_responsive"]


@pytest.mark.parametrize("qmpstatus", ["paused", "io-error"])
def test_pause_shows_in_qmpstatus(sim: RunningSimulator, qmpstatus: str) -> None:
    sim.pause(102, qmpstatus)
    current = get(sim, "nodes/pve3/qemu/102/status/current")
    assert (current["status"], current["qmpstatus"], current["cpu"]) == ("running", qmpstatus, 0)
    assert not sim.guest(102)["agent_responsive"]
    sim.resume(102)
    assert get(sim, "nodes/pve3/qemu/102/status/current")["qmpstatus"] == "running"


def test_bad_fault_values_are_refused_with_the_reason(sim: RunningSimulator) -> None:
    with pytest.raises(ControlError, match="qmpstatus must be one of"):
        sim.pause(102, "sleeping")
    with pytest.raises(ControlError, match="lock must be one of"):
        sim.lock(102, "forever")
    with pytest.raises(ControlError, match="404 no guest 4242"):
        sim.hang(4242)


def test_a_locked_guest_still_gets_a_upid_and_its_task_fails(sim: RunningSimulator) -> None:
    sim.lock(103, "backup")
    assert get(sim, "nodes/pve1/qemu/103/status/current")["lock"] == "backup"
    assert get(sim, "nodes/pve1/qemu/103/config")["lock"] == "backup"
    resource = next(r for r in get(sim, "cluster/resources?type=vm") if r["vmid"] == 103)
    assert resource["lock"] == "backup"
    assert run_task(sim, "pve1", "qemu", 103, "reset")["exitstatus"] == "VM is locked (backup)"
    sim.lock(106, "snapshot")  # a container on pve1
    assert run_task(sim, "pve1", "lxc", 106, "reboot")["exitstatus"] == "CT is locked (snapshot)"
    sim.unlock(103)
    assert "lock" not in get(sim, "nodes/pve1/qemu/103/status/current")
    errors = get(sim, "nodes/pve1/tasks?errors=1")
    assert {t["status"] for t in errors} == {"VM is locked (backup)", "CT is locked (snapshot)"}


def test_node_offline_quorum_and_proxying(sim: RunningSimulator) -> None:
    sim.node_offline("pve2")
    status = {e["id"]: e for e in get(sim, "cluster/status")}
    assert status["node/pve2"]["online"] == 0 and status["cluster"]["quorate"] == 1
    guests = {r["vmid"]: r for r in get(sim, "cluster/resources?type=vm")}
    assert guests[101]["status"] == "unknown" and guests[100]["status"] == "running"
    offline = call(sim, "GET", "nodes/pve2/qemu/101/status/current")
    assert offline.status_code == 595 and offline.content == b""
    sim.node_offline("pve3")
    assert {e["id"]: e for e in get(sim, "cluster/status")}["cluster"]["quorate"] == 0
    refused = call(sim, "POST", "nodes/pve1/qemu/100/status/reset")
    assert refused.status_code == 500 and refused.json()["message"] == "cluster not ready - no quorum?\n"
    sim.node_online("pve2")
    sim.node_online("pve3")
    assert {e["id"]: e for e in get(sim, "cluster/status")}["cluster"]["quorate"] == 1


def test_quorum_can_be_lost_with_every_node_up(sim: RunningSimulator) -> None:
    sim.quorum(False)
    assert {e["type"]: e for e in get(sim, "cluster/status")}["cluster"]["quorate"] == 0
    sim.quorum(None)
    assert {e["type"]: e for e in get(sim, "cluster/status")}["cluster"]["quorate"] == 1


def test_api_down_latency_and_heal(sim: RunningSimulator) -> None:
    sim.api_down()
    for path in ("version", "cluster/resources", "cluster/status"):
        response = call(sim, "GET", path)
        assert response.status_code == 500 and response.json()["data"] is None
    sim.api_up()
    assert call(sim, "GET", "version").status_code == 200
    sim.latency(0.3)
    started = time.monotonic()
    assert call(sim, "GET", "version").status_code == 200
    assert time.monotonic() - started >= 0.3
    sim.hang(100)
    sim.api_down(503)
    healed = sim.heal()
    assert healed["api_down"] is None and healed["latency"] == 0 and healed["faulty_guests"] == []


def test_revoking_the_power_privilege(sim: RunningSimulator) -> None:
    sim.revoke_power()
    refused = call(sim, "POST", "nodes/pve1/qemu/100/status/reset")
    assert (refused.status_code, refused.json()["message"]) == (403, "Permission check failed (/vms/100, "
                                                                     "VM.PowerMgmt)\n")
    assert call(sim, "GET", "cluster/resources").status_code == 200
    sim.restore_power()
    assert call(sim, "POST", "nodes/pve1/qemu/100/status/reset").status_code == 200


def test_migration_moves_the_guest_and_holds_the_migrate_lock_meanwhile(sim: RunningSimulator) -> None:
    sim.migrate(100, "pve3")
    assert call(sim, "GET", "nodes/pve1/qemu/100/status/current").status_code == 500
    assert get(sim, "nodes/pve3/qemu/100/status/current")["status"] == "running"
    sim.migrate(100, "pve2", seconds=0.3)
    assert get(sim, "nodes/pve3/qemu/100/status/current")["lock"] == "migrate"
    deadline = time.monotonic() + 5
    while next(r for r in get(sim, "cluster/resources?type=vm") if r["vmid"] == 100)["node"] != "pve2":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "lock" not in get(sim, "nodes/pve2/qemu/100/status/current")


def test_stop_and_start_from_the_control_api(sim: RunningSimulator) -> None:
    sim.stop_guest(104)
    assert get(sim, "nodes/pve2/qemu/104/status/current")["status"] == "stopped"
    with pytest.raises(ControlError, match="409"):
        sim.hang(104)
    sim.start_guest(104)
    assert get(sim, "nodes/pve2/qemu/104/status/current")["status"] == "running"


def test_tags_show_in_resources_and_config(sim: RunningSimulator) -> None:
    sim.set_tags(105, "prod;vmhealth-ignore")
    assert next(r for r in get(sim, "cluster/resources?type=vm") if r["vmid"] == 105)["tags"] == "prod;vmhealth-ignore"
    assert get(sim, "nodes/pve3/qemu/105/config")["tags"] == "prod;vmhealth-ignore"


def io_of(sim: RunningSimulator, vmid: int) -> tuple[int, int]:
    """diskwrite + netout of a guest in /cluster/resources, and its uptime."""
    [entry] = [g for g in get(sim, "cluster/resources?type=vm") if g["vmid"] == vmid]
    return entry["diskwrite"] + entry["netout"], entry["uptime"]


def test_a_hung_guest_s_counters_stop_and_a_reset_keeps_them(sim: RunningSimulator) -> None:
    first, _ = io_of(sim, 100)
    wait_for(lambda: io_of(sim, 100)[0] > first, 5, "a running guest to write and send")
    sim.hang(100)
    frozen, _ = io_of(sim, 100)
    time.sleep(1.1)  # /cluster/resources is rendered once per second
    assert io_of(sim, 100)[0] == frozen, "a hung guest writes and sends nothing"
    assert run_task(sim, "pve1", "qemu", 100, "reset")["exitstatus"] == "OK"
    wait_for(lambda: io_of(sim, 100)[0] > frozen, 5, "the same QEMU process to go on counting after a reset")


def test_agent_dead_stops_heartbeats_only(sim: RunningSimulator) -> None:
    state = sim.agent_dead(101)
    assert state["agent_silenced"] and state["io_active"] and state["guest_agent_answers"]
    before, _ = io_of(sim, 101)
    wait_for(lambda: io_of(sim, 101)[0] > before, 5, "a guest whose agent died to write and send")
    assert call(sim, "POST", "nodes/pve2/qemu/101/agent/ping").status_code == 200
    assert not sim.agent_alive(101)["agent_silenced"]


@pytest.mark.parametrize(("state", "message"), [
    ("none", "No QEMU guest agent configured\n"),
    ("not-running", "QEMU guest agent is not running\n"),
])
def test_guest_agent_states_answer_the_ping_as_proxmox_does(sim: RunningSimulator, state: str, message: str) -> None:
    sim.set_guest_agent(102, state)
    ping = call(sim, "POST", "nodes/pve3/qemu/102/agent/ping")
    assert (ping.status_code, ping.json()["message"]) == (500, message)
    current = get(sim, "nodes/pve3/qemu/102/status/current")
    assert ("agent" in current) == (state != "none")
    sim.heal()
    assert sim.guest(102)["guest_agent"] == ("none" if state == "none" else "running")


def test_bad_guest_agent_values_are_refused_and_change_nothing(sim: RunningSimulator) -> None:
    with pytest.raises(ControlError, match="state must be one of none, running, not-running"):
        sim.set_guest_agent(102, "asleep")
    lxc = next(g["vmid"] for g in get(sim, "cluster/resources?type=vm") if g["type"] == "lxc")
    with pytest.raises(ControlError, match="is a container: it has no QEMU guest agent"):
        sim.set_guest_agent(lxc, "running")
    assert sim.guest(102)["guest_agent"] == "running"
    assert call(sim, "POST", "nodes/pve3/qemu/102/agent/ping").status_code == 200
