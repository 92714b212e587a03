"""The simulator's API against the Proxmox API schema extracts in tests/data: required fields,
types (0/1 booleans, integers that are not floats), error bodies and status codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from vmhealth.simulator.testing import RunningSimulator, running_simulator

DATA = Path(__file__).resolve().parents[1] / "data"


def schema(name: str) -> dict[str, Any]:
    return json.loads((DATA / "pve-api-schema" / f"{name}.json").read_text())["returns"]


def problems(value: Any, spec: dict[str, Any], where: str = "data") -> list[str]:
    """Every way `value` differs from the schema `spec` (types, required fields, enums)."""
    kind = spec.get("type")
    found: list[str] = []
    if value is None:
        return [] if spec.get("optional") or kind == "null" else [f"{where}: null"]
    checks = {
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, int) and not isinstance(v, bool) and v in (0, 1),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    if kind in checks and not checks[kind](value):
        return [f"{where}: {value!r} is not a {kind}"]
    if "enum" in spec and value not in spec["enum"]:
        found.append(f"{where}: {value!r} not in {spec['enum']}")
    if kind == "array":
        for index, item in enumerate(value):
            found += problems(item, spec.get("items", {}), f"{where}[{index}]")
    if kind == "object":
        for name, prop in (spec.get("properties") or {}).items():
            if name in value:
                found += problems(value[name], prop, f"{where}.{name}")
            elif not prop.get("optional"):
                found.append(f"{where}: required field {name!r} missing")
    return found


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(nodes=3, guests=6, lxc=3, templates=1, task_seconds=0.2) as running:
        yield running


def call(sim: RunningSimulator, method: str, path: str, role: str = "full", **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{sim.base_url}/{path}", headers=sim.auth_header(role), verify=sim.ca_bundle,
                            timeout=10, **kwargs)


def data(sim: RunningSimulator, method: str, path: str, **kwargs: Any) -> Any:
    response = call(sim, method, path, **kwargs)
    assert response.status_code == 200, (path, response.status_code, response.reason, response.text)
    return response.json()["data"]


def wait_task(sim: RunningSimulator, node: str, upid: str) -> dict[str, Any]:
    for _ in range(100):
        status = data(sim, "GET", f"nodes/{node}/tasks/{quote(upid, safe='')}/status")
        if status["status"] == "stopped":
            return status
        __import__("time").sleep(0.05)
    raise AssertionError(f"task {upid} still running")


@pytest.mark.parametrize(
    ("path", "schema_name"),
    [
        ("version", "version.GET"),
        ("cluster/resources", "cluster_resources.GET"),
        ("cluster/resources?type=vm", "cluster_resources.GET"),
        ("cluster/resources?type=node", "cluster_resources.GET"),
        ("cluster/resources?type=storage", "cluster_resources.GET"),
        ("cluster/status", "cluster_status.GET"),
        ("cluster/ha/status/current", "cluster_ha_status_current.GET"),
        ("cluster/ha/resources", "cluster_ha_resources.GET"),
        ("access/permissions", "access_permissions.GET"),
        ("nodes", "nodes.GET"),
        ("nodes/pve1/status", "nodes_node_status.GET"),
        ("nodes/pve1/qemu", "nodes_node_qemu.GET"),
        ("nodes/pve1/lxc", "nodes_node_lxc.GET"),
        ("nodes/pve1/qemu/100/status/current", "nodes_node_qemu_vmid_status_current.GET"),
        ("nodes/pve1/qemu/100/config", "nodes_node_qemu_vmid_config.GET"),
        ("nodes/pve2/lxc/107/status/current", "nodes_node_lxc_vmid_status_current.GET"),
        ("nodes/pve1/qemu/109/status/current", "nodes_node_qemu_vmid_status_current.GET"),  # the template
    ],
)
def test_get_responses_match_the_schema(sim: RunningSimulator, path: str, schema_name: str) -> None:
    body = data(sim, "GET", path)
    assert problems(body, schema(schema_name)) == []
    assert body or body == [], path


def test_resources_filter_by_type_and_carry_the_guest_fields(sim: RunningSimulator) -> None:
    everything = data(sim, "GET", "cluster/resources")
    assert {r["type"] for r in everything} == {"node", "qemu", "lxc", "storage"}
    vms = data(sim, "GET", "cluster/resources", params={"type": "vm"})
    assert sorted(r["vmid"] for r in vms) == list(range(100, 110))
    assert {r["type"] for r in data(sim, "GET", "cluster/resources", params={"type": "node"})} == {"node"}
    template = next(r for r in vms if r["vmid"] == 109)
    assert template["template"] == 1 and template["status"] == "stopped"
    running = next(r for r in vms if r["vmid"] == 100)
    assert running["template"] == 0 and running["uptime"] > 0 and "lock" not in running and "tags" not in running
    assert isinstance(running["maxmem"], int) and 0 < running["mem"] <= running["maxmem"]


def test_config_carries_the_smbios_uuid_that_status_does_not(sim: RunningSimulator) -> None:
    config = data(sim, "GET", "nodes/pve1/qemu/100/config")
    assert config["smbios1"].startswith("uuid=") and len(config["smbios1"]) == len("uuid=") + 36
    assert config["smbios1"][5:] == sim.guest(100)["uuid"]


@pytest.mark.parametrize(
    ("node", "kind", "vmid", "action", "schema_name", "task_type"),
    [
        ("pve1", "qemu", 103, "reset", "nodes_node_qemu_vmid_status_reset.POST", "qmreset"),
        ("pve2", "qemu", 101, "reboot", "nodes_node_qemu_vmid_status_reboot.POST", "qmreboot"),
        ("pve2", "lxc", 107, "reboot", "nodes_node_lxc_vmid_status_reboot.POST", "vzreboot"),
    ],
)
def test_actions_return_upids_whose_task_ends_ok(sim: RunningSimulator, node: str, kind: str, vmid: int,
                                                 action: str, schema_name: str, task_type: str) -> None:
    upid = data(sim, "POST", f"nodes/{node}/{kind}/{vmid}/status/{action}")
    assert problems(upid, schema(schema_name)) == []
    upid_format = json.loads((DATA / "upid-format.json").read_text())
    assert __import__("re").match(upid_format["decode_regex"], upid), upid
    assert upid.split(":")[5:8] == [task_type, str(vmid), sim.token_id]
    status = wait_task(sim, node, upid)
    assert problems(status, schema("nodes_node_tasks_upid_status.GET")) == []
    assert status["exitstatus"] == "OK" and status["user"] == "root@pam" and status["tokenid"] == "sim"
    listed = data(sim, "GET", f"nodes/{node}/tasks", params={"vmid": vmid})
    assert problems(listed, schema("nodes_node_tasks.GET")) == []
    assert [t["upid"] for t in listed][:1] == [upid] and listed[0]["status"] == "OK"
    log = data(sim, "GET", f"nodes/{node}/tasks/{quote(upid, safe='')}/log")
    assert problems(log, schema("nodes_node_tasks_upid_log.GET")) == [] and log[-1]["t"] == "TASK OK"


def test_stop_then_start(sim: RunningSimulator) -> None:
    upid = data(sim, "POST", "nodes/pve3/qemu/105/status/stop")
    assert wait_task(sim, "pve3", upid)["exitstatus"] == "OK"
    stopped = data(sim, "GET", "nodes/pve3/qemu/105/status/current")
    assert stopped["status"] == "stopped" and stopped["qmpstatus"] == "stopped" and "pid" not in stopped
    assert stopped["uptime"] == 0
    error = call(sim, "POST", "nodes/pve3/qemu/105/status/reset")
    assert (error.status_code, error.json()) == (500, {"data": None, "message": "VM 105 not running\n"})
    upid = data(sim, "POST", "nodes/pve3/qemu/105/status/start")
    assert wait_task(sim, "pve3", upid)["exitstatus"] == "OK"
    assert data(sim, "GET", "nodes/pve3/qemu/105/status/current")["status"] == "running"


def test_agent_ping(sim: RunningSimulator) -> None:
    body = data(sim, "POST", "nodes/pve1/qemu/100/agent/ping")
    assert body == {"result": {}} and problems(body, schema("nodes_node_qemu_vmid_agent_ping.POST")) == []


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "nodes/pve2/qemu/100/status/current", 500,
         "Configuration file 'nodes/pve2/qemu-server/100.conf' does not exist\n"),
        ("GET", "nodes/pve1/qemu/999/status/current", 500,
         "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist\n"),
        ("POST", "nodes/pve2/qemu/100/status/reset", 500,
         "unable to find configuration file for VM 100 on node 'pve2'\n"),
        ("POST", "nodes/pve1/qemu/100/status/bogus", 501,
         "Method 'POST /nodes/pve1/qemu/100/status/bogus' not implemented"),
        ("POST", "nodes/pve2/lxc/107/status/reset", 501,
         "Method 'POST /nodes/pve2/lxc/107/status/reset' not implemented"),
        ("GET", "no/such/path", 501, "Method 'GET /no/such/path' not implemented"),
        ("POST", "nodes/pve1/qemu/99/status/reset", 400, "Parameter verification failed.\n"),
        ("POST", "nodes/pve1/qemu/109/status/start", 500, "you can't start a vm if it's a template\n"),
    ],
)
def test_errors_have_the_real_status_and_body(sim: RunningSimulator, method: str, path: str, status: int,
                                              message: str) -> None:
    response = call(sim, method, path)
    assert response.status_code == status
    body = response.json()
    assert body["data"] is None and body["message"] == message
    assert response.reason == message.rstrip("\n")


def test_authentication_failures_are_empty_401s(sim: RunningSimulator) -> None:
    for headers in ({}, {"Authorization": f"PVEAPIToken={sim.token_id}=wrong"},
                    {"Authorization": "PVEAPIToken=nobody@pve!x=y"}):
        response = requests.get(f"{sim.base_url}/version", headers=headers, verify=sim.ca_bundle, timeout=10)
        assert response.status_code == 401 and response.content == b""
    response = requests.get(f"{sim.base_url}/version", verify=sim.ca_bundle, timeout=10)
    assert response.reason == "No ticket"


def test_least_privilege_tokens_get_permission_check_failed(sim: RunningSimulator) -> None:
    audit = call(sim, "POST", "nodes/pve1/qemu/100/status/reset", role="audit")
    assert audit.status_code == 403
    assert audit.json() == {"data": None, "message": "Permission check failed (/vms/100, VM.PowerMgmt)\n"}
    assert call(sim, "GET", "cluster/status", role="audit").status_code == 200  # Sys.Audit is enough to read
    upid = call(sim, "POST", "nodes/pve1/qemu/103/status/reset", role="power").json()["data"]
    assert upid.split(":")[7] == "remediator@pve!sim"
    ping = call(sim, "POST", "nodes/pve1/qemu/100/agent/ping", role="audit")
    needed = "VM.GuestAgent.Audit|VM.GuestAgent.Unrestricted"
    assert ping.json()["message"] == f"Permission check failed (/vms/100, {needed})\n"


def test_ticket_login_and_csrf(sim: RunningSimulator) -> None:
    url = sim.base_url
    wrong = requests.post(f"{url}/access/ticket", data={"username": "root@pam", "password": "x"},
                          verify=sim.ca_bundle, timeout=10)
    assert wrong.status_code == 401 and wrong.json() == {"data": None, "message": "authentication failure\n"}
    login = requests.post(f"{url}/access/ticket", data={"username": "root@pam", "password": sim.token_secret},
                          verify=sim.ca_bundle, timeout=10)
    assert login.status_code == 200
    ticket = login.json()["data"]
    assert problems(ticket, schema("access_ticket.POST")) == []
    assert ticket["ticket"].startswith("PVE:root@pam:") and ticket["clustername"] == sim.cluster_name
    cookies = {"PVEAuthCookie": ticket["ticket"]}
    assert requests.get(f"{url}/version", cookies=cookies, verify=sim.ca_bundle, timeout=10).status_code == 200
    no_csrf = requests.post(f"{url}/nodes/pve1/qemu/100/status/reset", cookies=cookies, verify=sim.ca_bundle,
                            timeout=10)
    assert (no_csrf.status_code, no_csrf.reason, no_csrf.content) == (401, "Permission denied - invalid csrf token",
                                                                        b"")
    ok = requests.post(f"{url}/nodes/pve1/qemu/100/status/reset", cookies=cookies, verify=sim.ca_bundle,
                       headers={"CSRFPreventionToken": ticket["CSRFPreventionToken"]}, timeout=10)
    assert ok.status_code == 200 and ok.json()["data"].split(":")[7] == "root@pam"


def test_request_log_counts_per_path(sim: RunningSimulator) -> None:
    sim.clear_requests()
    for _ in range(3):
        data(sim, "GET", "cluster/resources", params={"type": "vm"})
    data(sim, "GET", "cluster/status")
    counts = sim.request_counts()
    assert counts == {"GET /cluster/resources": 3, "GET /cluster/status": 1}
    assert sim.request_counts(with_query=True)["GET /cluster/resources?type=vm"] == 3
