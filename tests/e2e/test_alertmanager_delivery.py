"""End to end: the simulated Proxmox cluster, the real Alertmanager binary, and `vmhealth webhook` as
a real gunicorn process. A hung guest's alert goes through Alertmanager to the webhook, which resets
it once; the `history`, `reset` and `release` commands talk to the running webhook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.helpers.requirements import binary
from tests.helpers.webhook import ADMIN, TOKEN, auth, send_alert
from vmhealth.stack.launcher import Child, vmhealth_command
from vmhealth.stack.processes import free_port, wait_for

pytestmark = [pytest.mark.binaries, pytest.mark.slow]




@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    from vmhealth.simulator.testing import running_simulator

    alertmanager = binary("alertmanager")
    with running_simulator(nodes=2, guests=12, boot_seconds=0.5, task_seconds=0.2) as sim:
        webhook_port, am_port = free_port(), free_port()
        config = {
            "clusters": [sim.cluster_config()],
            "webhook": {"listen": f"127.0.0.1:{webhook_port}", "token": TOKEN, "admin_token": ADMIN,
                        "database_url": f"sqlite:///{tmp_path}/webhook.db",
                        "policy": {"boot_grace": "0s", "cooldown": "10m", "task_timeout": "20s"}},
        }
        config_path = tmp_path / "vmhealth.yml"
        config_path.write_text(yaml.safe_dump(config))
        (tmp_path / "token").write_text(TOKEN)
        am_config = {
            "route": {"receiver": "vmhealth", "group_by": ["cluster", "vmid"], "group_wait": "1s",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "vmhealth", "webhook_configs": [{
                "url": f"http://127.0.0.1:{webhook_port}/alerts", "send_resolved": True,
                "http_config": {"authorization": {"type": "Bearer", "credentials_file": str(tmp_path / "token")}},
            }]}],
        }
        (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        webhook = Child("the webhook", vmhealth_command("webhook", config_path), tmp_path / "webhook.log",
                        f"http://127.0.0.1:{webhook_port}/healthz", env)
        am = Child("Alertmanager", [alertmanager, f"--config.file={tmp_path / 'alertmanager.yml'}",
                                    f"--storage.path={tmp_path / 'am-data'}",
                                    f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
                   tmp_path / "alertmanager.log", f"http://127.0.0.1:{am_port}/-/ready")
        with webhook.started(60), am.started(60):
            yield {"sim": sim, "webhook": f"http://127.0.0.1:{webhook_port}", "am": f"http://127.0.0.1:{am_port}",
                   "config": str(config_path), "tmp": tmp_path}


def cli(stack: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmhealth", *args, "--config", stack["config"]],
                          capture_output=True, text=True, timeout=120)


def test_hung_guest_is_reset_once_through_alertmanager(stack: dict[str, Any]) -> None:
    sim, am, webhook = stack["sim"], stack["am"], stack["webhook"]
    vmid = 101
    sim.hang(vmid)
    for _ in range(3):  # Alertmanager receives the alert again and again (several Prometheus replicas)
        send_alert(am, vmid, sim.cluster_name)
    wait_for(lambda: sim.resets(vmid), 60, "the reset")

    def finished() -> bool:
        rows = requests.get(f"{webhook}/api/resets?vmid={vmid}", timeout=5, headers=auth(ADMIN)).json()["resets"]
        return bool(rows) and rows[0]["outcome"] != "pending"

    wait_for(finished, 30, "the reset task's outcome")
    [row] = requests.get(f"{webhook}/api/resets?vmid={vmid}", timeout=5, headers=auth(ADMIN)).json()["resets"]
    assert row["outcome"] == "success" and row["upid"].startswith("UPID:") and row["action"] == "reset"
    send_alert(am, vmid, sim.cluster_name)
    time.sleep(3)  # more group intervals pass: nothing new may be done
    assert len(sim.resets(vmid)) == 1

    table = cli(stack, "history", "--vmid", str(vmid))
    assert table.returncode == 0, table.stderr
    assert "OUTCOME" in table.stdout.splitlines()[0] and "success" in table.stdout

    refused = cli(stack, "reset", str(vmid), "--reason", "checking")
    assert refused.returncode == 1 and "skipped:cooldown" in refused.stdout
    assert cli(stack, "release", str(vmid)).returncode == 1  # not quarantined

    send_alert(am, vmid, sim.cluster_name, resolved=True)
    wait_for(lambda: any(r["outcome"] == "resolved" for r in
                         requests.get(f"{webhook}/api/resets?vmid={vmid}", timeout=5,
                                      headers=auth(ADMIN)).json()["resets"]),
             30, "the resolved notification")
    metrics = requests.get(f"{webhook}/metrics", timeout=5).text
    assert f'vmhealth_remediation_incident_attempts{{cluster="{sim.cluster_name}",vmid="{vmid}"}}' not in metrics
    assert "vmhealth_remediation_actions_total" in metrics
    assert json.loads(cli(stack, "history", "--json", "--limit", "5").stdout)["resets"]
