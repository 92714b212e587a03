"""Simulated agents: the original heartbeat payload reaches a real HTTP receiver, with the shared or
the per-VM key, stops while a guest hangs and comes back after a reset."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from tests.helpers.receiver import Receiver
from vmhealth.keys import derive_vm_key
from vmhealth.simulator.testing import running_simulator


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def test_every_running_guest_reports_the_original_payload(receiver: Receiver) -> None:
    with running_simulator(nodes=2, guests=4, lxc=2, templates=1, agents_to=receiver.url, agent_interval=0.5,
                           agent_key="shared-key", agent_key_mode="shared", boot_seconds=0.2) as sim:
        receiver.wait_for(lambda: receiver.vmids() == {100, 101, 102, 103, 104, 105})
        # The receiver logs a report before its reply reaches the sender, which counts it after.
        receiver.wait_for(lambda: sim.agents()["results"].get("200", 0) >= 6)
        stats = sim.agents()
    _, key, body = receiver.reports[0]
    assert key == "shared-key"
    assert set(body) == {"hostname", "vmid", "node", "status", "cpuUsage", "ramUsage", "ramTotal", "diskUsage",
                         "diskTotal", "uptime", "timestamp", "cluster"}
    assert isinstance(body["vmid"], str) and body["status"] == "running" and body["cluster"] == "sim"
    assert 0 <= body["cpuUsage"] <= 100 and 0 < body["ramUsage"] <= body["ramTotal"]
    assert body["hostname"] == f"vm{body['vmid']}" or body["hostname"] == f"ct{body['vmid']}"
    assert stats["results"].get("200", 0) >= 6
    assert 106 not in receiver.vmids()  # the template never runs an agent


def test_per_vm_keys(receiver: Receiver) -> None:
    with running_simulator(nodes=1, guests=3, agents_to=receiver.url, agent_interval=0.5, agent_key="k",
                           agent_key_mode="per-vm", cluster_name="lab") as _sim:
        receiver.wait_for(lambda: receiver.vmids() == {100, 101, 102})
    for _, key, body in receiver.reports:
        assert body["cluster"] == "lab"
        assert key == derive_vm_key("k", "lab", int(body["vmid"]))


def test_every_heartbeat_goes_to_each_exporter_of_a_pair_and_a_dead_one_stops_none(receiver: Receiver) -> None:
    second = Receiver()
    second.thread.start()
    second.server.shutdown()
    second.server.server_close()  # the second exporter of the pair is down from the start
    with running_simulator(nodes=1, guests=3, agents_to=f"{second.url},{receiver.url}", agent_interval=0.3,
                           agent_key="k", boot_seconds=0.2) as sim:
        receiver.wait_for(lambda: receiver.vmids() == {100, 101, 102})
        start = time.time()
        receiver.wait_for(lambda: receiver.vmids(since=start) == {100, 101, 102})

        def counted() -> bool:  # an agent counts a result once the answer is back, after the receiver saw it
            results = sim.agents()["results"]
            return results.get("error", 0) >= 3 and results.get("200", 0) >= 6

        receiver.wait_for(counted)
    revived = Receiver()
    revived.thread.start()
    try:
        with running_simulator(nodes=1, guests=3, agents_to=f"{revived.url},{receiver.url}", agent_interval=0.3,
                               agent_key="k", boot_seconds=0.2):
            both = time.time()
            revived.wait_for(lambda: revived.vmids() == {100, 101, 102})
            receiver.wait_for(lambda: receiver.vmids(since=both) == {100, 101, 102})
    finally:
        revived.server.shutdown()
        revived.server.server_close()


def test_a_hung_guest_goes_silent_and_reports_again_after_a_reset(receiver: Receiver) -> None:
    with running_simulator(nodes=1, guests=3, agents_to=receiver.url, agent_interval=0.3, boot_seconds=0.5,
                           task_seconds=0.1) as sim:
        receiver.wait_for(lambda: receiver.vmids() == {100, 101, 102})
        sim.hang(101)
        time.sleep(0.5)  # let a heartbeat already on its way arrive
        silent_since = time.time()
        receiver.wait_for(lambda: {100, 102} <= receiver.vmids(since=silent_since + 0.7))
        assert 101 not in receiver.vmids(since=silent_since)

        reset = requests.post(f"{sim.base_url}/nodes/pve1/qemu/101/status/reset", headers=sim.auth_header(),
                              verify=sim.ca_bundle, timeout=10)
        assert reset.status_code == 200
        reset_at = time.time()
        receiver.wait_for(lambda: 101 in receiver.vmids(since=reset_at))
        first = min(at for at, _, body in receiver.reports if body["vmid"] == "101" and at >= reset_at)
        assert first - reset_at >= 0.5  # not before the task ran and the guest booted
        uptime = next(b["uptime"] for at, _, b in receiver.reports if b["vmid"] == "101" and at == first)
        assert uptime <= 2


def test_a_silenced_agent_stops_reporting_while_the_guest_stays_healthy(receiver: Receiver) -> None:
    """`silence` breaks only the path to the exporter: Proxmox and the QEMU guest agent see a healthy guest."""
    with running_simulator(nodes=1, guests=3, agents_to=receiver.url, agent_interval=0.3, boot_seconds=0.2,
                           task_seconds=0.1) as sim:
        receiver.wait_for(lambda: receiver.vmids() == {100, 101, 102})
        receiver.wait_for(lambda: sim.guest(101)["agent_last_heartbeat"] is not None)
        state = sim.silence(101)
        assert state["agent_silenced"] and state["agent_responsive"] and not state["hung"]
        assert [g["vmid"] for g in sim.state()["faulty_guests"]] == [101]
        ping = requests.post(f"{sim.base_url}/nodes/pve1/qemu/101/agent/ping", headers=sim.auth_header(),
                             verify=sim.ca_bundle, timeout=10)
        assert ping.status_code == 200
        time.sleep(0.5)  # let a heartbeat already on its way arrive
        silent_since = time.time()
        last = sim.guest(101)["agent_last_heartbeat"]
        receiver.wait_for(lambda: {100, 102} <= receiver.vmids(since=silent_since + 0.7))
        assert 101 not in receiver.vmids(since=silent_since)
        assert last <= silent_since and sim.guest(101)["agent_last_heartbeat"] == last

        assert not sim.unsilence(101)["agent_silenced"]
        back = time.time()
        receiver.wait_for(lambda: 101 in receiver.vmids(since=back))
        # The simulator notes the heartbeat once the exporter has answered, just after the receiver saw it.
        receiver.wait_for(lambda: sim.guest(101)["agent_last_heartbeat"] > back, 5)
        sim.silence(102)
        assert not sim.heal()["faulty_guests"]


def test_a_task_records_when_it_was_requested() -> None:
    with running_simulator(nodes=1, guests=1, task_seconds=0.1) as sim:
        before = time.time()
        reset = requests.post(f"{sim.base_url}/nodes/pve1/qemu/100/status/reset", headers=sim.auth_header(),
                              verify=sim.ca_bundle, timeout=10)
        assert reset.status_code == 200
        [task] = sim.resets(100)
        assert before <= task["requested_at"] <= time.time()
        assert task["starttime"] == int(task["requested_at"])
