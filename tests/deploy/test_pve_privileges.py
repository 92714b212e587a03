"""Least privilege: the Proxmox roles docs/security.md (and the README) create with pveum are exactly
the simulator's audit and power roles, the exporter does its whole job with the audit token, the
webhook resets a guest with the power token alone, and the audit token cannot reset.

Cost: about 5 s (an in-process simulator over HTTPS, the apps in-process).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.servers import ADMIN_TOKEN, AGENT_KEY, WEBHOOK_TOKEN, bearer
from vmhealth.config import load
from vmhealth.simulator.auth import ROLES
from vmhealth.simulator.testing import RunningSimulator, running_simulator

ROOT = Path(__file__).resolve().parents[2]


def pveum_blocks(text: str) -> list[str]:
    """The ```sh blocks that run pveum."""
    return [block for block in re.findall(r"```sh\n(.*?)```", text, re.S) if "pveum " in block]


def granted(commands: str, user: str) -> set[str]:
    """The privileges `commands` give `user`'s privilege-separated token on /: its roles', limited to the user's."""
    roles = {m[0]: set(m[1].split()) for m in re.findall(r'pveum role add (\S+) --privs "([^"]+)"', commands)}

    def on_root(kind: str, who: str) -> set[str]:
        out: set[str] = set()
        for name, role in re.findall(rf"pveum acl modify / --{kind} '?([^' ]+)'? --roles (\S+)", commands):
            if name == who:
                out |= roles[role]
        return out

    return on_root("users", user) & on_root("tokens", f"{user}!vmhealth")


def documented() -> str:
    security = pveum_blocks((ROOT / "docs" / "security.md").read_text())
    readme = pveum_blocks((ROOT / "README.md").read_text())
    assert security and security == readme, "README and docs/security.md must show the same pveum commands"
    return "\n".join(security)


def test_the_documented_roles_are_the_simulators_roles() -> None:
    commands = documented()
    assert granted(commands, "monitor@pve") == set(ROLES["audit"]) == {"VM.Audit", "Sys.Audit"}
    assert granted(commands, "remediator@pve") == set(ROLES["power"]) == {
        "VM.Audit", "VM.PowerMgmt", "Sys.Audit", "VM.GuestAgent.Audit"}
    assert "--privsep 1" in commands, "tokens must have privilege separation (their own ACLs)"


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(nodes=2, guests=6, boot_seconds=0.1, task_seconds=0.1) as sim:
        yield sim


def refused(sim: RunningSimulator, user: str) -> list[dict[str, Any]]:
    return [r for r in sim.requests(recent=2000)["recent"] if r["user"] == user and r["status"] == 403]


def test_the_exporter_does_everything_with_the_audit_token(sim: RunningSimulator, tmp_path: Path) -> None:
    from vmhealth.exporter.app import create_app

    raw = {"clusters": [sim.cluster_config(role="audit")], "thresholds": {"stale_timeout": "1s"},
           "exporter": {"api_key": AGENT_KEY, "per_vm_keys": False, "database_url": f"sqlite:///{tmp_path}/exporter.db"}}
    app = create_app(load(raw=raw, environ={}, components=("exporter",)), start=False)
    try:
        sim.clear_requests()
        app.extensions["vmhealth"].poll_all()
        client = app.test_client()
        stale = {"hostname": "h103", "vmid": "103", "cpuUsage": 1}
        assert client.post("/api/health/report", json=stale, headers={"X-API-Key": AGENT_KEY}).status_code == 200
        time.sleep(1.5)  # its heartbeat goes stale: the next poll reads its status/current (qmpstatus)
        report = {"hostname": "h", "uuid": sim.guest(101)["uuid"], "cpuUsage": 1}  # needs the VM config
        client.post("/api/health/report", json=report, headers={"X-API-Key": AGENT_KEY})
        app.extensions["vmhealth"].poll_all()
        assert client.post("/api/health/report", json=report, headers={"X-API-Key": AGENT_KEY}).status_code == 200
        page = client.get("/metrics").get_data(as_text=True)
        assert 'vmhealth_pve_up{cluster="sim"} 1' in page
        assert 'vmhealth_pve_cluster_quorate{cluster="sim"} 1' in page
        assert len(client.get("/api/vms").get_json()) == 6
        paths = sim.request_counts()
        assert any(p.endswith("/status/current") for p in paths) and any(p.endswith("/config") for p in paths)
        assert refused(sim, "audit@pve!sim") == []
    finally:
        app.extensions["vmhealth"].archive.close()


def webhook(sim: RunningSimulator, folder: Path, role: str) -> Any:
    from vmhealth.webhook.app import create_app

    raw = {"clusters": [sim.cluster_config(role=role)],
           "webhook": {"token": WEBHOOK_TOKEN, "admin_token": ADMIN_TOKEN,
                       "database_url": f"sqlite:///{folder}/webhook-{role}.db",
                       "policy": {"boot_grace": "0s", "task_timeout": "20s"}}}
    return create_app(load(raw=raw, environ={}, components=("webhook",)), start_worker=False, task_poll_interval=0.1,
                      settle=0.1)


def test_the_power_token_alone_resets_and_the_audit_token_cannot(sim: RunningSimulator, tmp_path: Path) -> None:
    sim.clear_requests()
    audit = webhook(sim, tmp_path, "audit")
    try:
        reply = audit.test_client().post("/api/vms/104/reset", json={"reason": "test"}, headers=bearer(ADMIN_TOKEN))
        assert reply.get_json()["success"] is False
        assert "Permission check failed (/vms/104, VM.PowerMgmt)" in reply.get_json()["error"]
        assert sim.resets(104) == []
    finally:
        audit.extensions["vmhealth"].close()

    power = webhook(sim, tmp_path, "power")
    try:
        sim.hang(105)
        reply = power.test_client().post("/api/vms/105/reset", json={"reason": "test"}, headers=bearer(ADMIN_TOKEN))
        assert reply.status_code == 200 and reply.get_json()["success"] is True, reply.get_json()
        assert len(sim.resets(105)) == 1
        assert refused(sim, "remediator@pve!sim") == []
        history = power.test_client().get("/api/resets?vmid=105", headers=bearer(ADMIN_TOKEN)).get_json()["resets"]
        assert history[0]["outcome"] == "success" and history[0]["upid"].split(":")[7] == "remediator@pve!sim"
    finally:
        power.extensions["vmhealth"].close()
