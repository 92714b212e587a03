"""Real Proxmox clients against the simulator: proxmoxer with a token (CA bundle and verify_ssl off),
proxmoxer with a password login, and vmhealth's own PveClient built from a YAML `clusters[]` entry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from vmhealth.config import load
from vmhealth.pve import PveClient, PveError
from vmhealth.simulator.testing import RunningSimulator, running_simulator


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(nodes=3, guests=6, lxc=2, task_seconds=0.1) as running:
        yield running


def token_client(sim: RunningSimulator, verify: bool | str) -> ProxmoxAPI:
    user, _, name = sim.token_id.partition("!")
    return ProxmoxAPI(sim.host, user=user, token_name=name, token_value=sim.token_secret, verify_ssl=verify,
                      timeout=10)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.parametrize("verify", ["ca_bundle", False])
def test_proxmoxer_with_a_token(sim: RunningSimulator, verify: str | bool) -> None:
    api = token_client(sim, sim.ca_bundle if verify == "ca_bundle" else False)
    assert api.version.get()["release"] == "9.0"
    vms = api.cluster.resources.get(type="vm")
    assert len(vms) == 8
    node = next(v["node"] for v in vms if v["vmid"] == 102)
    assert api.nodes(node).qemu(102).status.current.get()["qmpstatus"] == "running"
    upid = api.nodes(node).qemu(102).status.reset.post()
    assert upid.startswith(f"UPID:{node}:")
    other = next(n for n in ("pve1", "pve2", "pve3") if n != node)
    with pytest.raises(ResourceException) as caught:  # asked on the wrong node
        api.nodes(other).qemu(102).status.current.get()
    assert caught.value.status_code == 500


def test_the_system_trust_store_does_not_trust_the_simulator(sim: RunningSimulator) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{sim.base_url}/version", headers=sim.auth_header(), timeout=10)


def test_proxmoxer_with_a_password_login(sim: RunningSimulator) -> None:
    api = ProxmoxAPI(sim.host, user="root@pam", password=sim.token_secret, verify_ssl=sim.ca_bundle, timeout=10)
    assert {n["node"] for n in api.nodes.get()} == {"pve1", "pve2", "pve3"}
    assert api.nodes("pve1").qemu(100).status.reset.post().endswith(":qmreset:100:root@pam:")  # CSRF token sent


def test_vmhealth_pve_client_from_the_yaml_entry(sim: RunningSimulator) -> None:
    config = load(raw={"clusters": [sim.cluster_config()]}, environ={})
    client = PveClient(config.clusters[0])
    guests = client.guests()
    assert sorted(g["vmid"] for g in guests) == list(range(100, 108))
    assert sum(1 for e in client.cluster_status() if e["type"] == "node" and e["online"] == 1) == 3
    upid = client.guest_action("pve2", "qemu", 101, "reset")
    status = client.task_status("pve2", upid)
    assert status["upid"] == upid and status["type"] == "qmreset"
    assert client.tasks("pve2", source="all", vmid=101)[0]["upid"] == upid


def test_vmhealth_pve_client_with_least_privilege_tokens(sim: RunningSimulator) -> None:
    audit = PveClient(load(raw={"clusters": [sim.cluster_config(role="audit")]}, environ={}).clusters[0])
    assert len(audit.guests()) == 8
    with pytest.raises(PveError) as refused:
        audit.guest_action("pve1", "qemu", 100, "reset")
    assert refused.value.status == 403 and "Permission check failed (/vms/100, VM.PowerMgmt)" in str(refused.value)
    assert not refused.value.unknown_outcome
    power = PveClient(load(raw={"clusters": [sim.cluster_config(role="power")]}, environ={}).clusters[0])
    assert power.guest_action("pve1", "qemu", 100, "reset").startswith("UPID:pve1:")


def test_wrong_secret_is_a_401(sim: RunningSimulator) -> None:
    entry = {**sim.cluster_config(), "token_secret": "wrong"}
    client = PveClient(load(raw={"clusters": [entry]}, environ={}).clusters[0])
    with pytest.raises(PveError) as refused:
        client.guests()
    assert refused.value.status == 401
