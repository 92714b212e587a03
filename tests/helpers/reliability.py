"""Shared pieces of the reliability tests that need only the remediation half of the product: the
simulated Proxmox cluster, the real Alertmanager binary and `vmhealth webhook` as a real process
that a test may kill and start again on the same database.

No tests live here; the module is named so that only the reliability files hold it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.helpers.requirements import binary
from tests.helpers.webhook import ADMIN, TOKEN, auth, send_alert
from vmhealth.stack.launcher import Child, vmhealth_command
from vmhealth.stack.processes import free_port, wait_for


def reachable(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` in a text exposition page."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


class Remediation:
    """The webhook (restartable) and Alertmanager in `folder`, acting on the simulator `sim`."""

    def __init__(self, sim: Any, folder: Path, database_url: str, policy: dict[str, Any] | None = None):
        self.sim = sim
        self.folder = folder
        self.port = free_port()
        self.am_port = free_port()
        self.webhook = f"http://127.0.0.1:{self.port}"
        self.am = f"http://127.0.0.1:{self.am_port}"
        self.config = folder / "vmhealth.yml"
        self.config.write_text(yaml.safe_dump({
            "clusters": [sim.cluster_config()],
            "webhook": {"listen": f"127.0.0.1:{self.port}", "token": TOKEN, "admin_token": ADMIN,
                        "database_url": database_url, "claim_lease": "5s",
                        "policy": {"boot_grace": "0s", "cooldown": "10m", "task_timeout": "60s",
                                   **(policy or {})}},
        }))
        # the test run's own environment, VMHEALTH_* included
        self.process = Child("the webhook", vmhealth_command("webhook", self.config), folder / "webhook.log",
                             f"{self.webhook}/healthz", {**os.environ, "PYTHONUNBUFFERED": "1"})
        self.alertmanager: Child | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.process.log_path

    def start_webhook(self) -> None:
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
        self.process.start(60)

    def stop_webhook(self) -> None:
        self.process.stop()

    def kill_webhook(self) -> None:
        """SIGKILL: no shutdown hook runs, as after a power cut or the OOM killer."""
        self.process.stop(kill=True)

    def start_alertmanager(self, group_interval: str = "2s") -> None:
        (self.folder / "token").write_text(TOKEN)
        config = {
            "route": {"receiver": "vmhealth", "group_by": ["cluster", "vmid"], "group_wait": "1s",
                      "group_interval": group_interval, "repeat_interval": "1h"},
            "receivers": [{"name": "vmhealth", "webhook_configs": [{
                "url": f"{self.webhook}/alerts", "send_resolved": True,
                "http_config": {"authorization": {"type": "Bearer",
                                                  "credentials_file": str(self.folder / "token")}},
            }]}],
        }
        (self.folder / "alertmanager.yml").write_text(yaml.safe_dump(config))
        self.alertmanager = Child("Alertmanager", [
            binary("alertmanager"), f"--config.file={self.folder / 'alertmanager.yml'}",
            f"--storage.path={self.folder / 'am-data'}", f"--web.listen-address=127.0.0.1:{self.am_port}",
            "--cluster.listen-address="], self.folder / "alertmanager.log", f"{self.am}/-/ready")
        self.alertmanager.start(60)

    def stop_alertmanager(self) -> None:
        if self.alertmanager is not None:
            self.alertmanager.stop()

    # --- what the tests do and look at ---------------------------------------------------------
    def fire(self, vmid: int, resolved: bool = False) -> None:
        """Hand Alertmanager a VMHung alert for `vmid`, as Prometheus would."""
        send_alert(self.am, vmid, self.sim.cluster_name, resolved)

    def history(self, vmid: int | None = None) -> list[dict[str, Any]]:
        query = f"?vmid={vmid}&limit=1000" if vmid is not None else "?limit=1000"
        return requests.get(f"{self.webhook}/api/resets{query}", timeout=10, headers=auth(ADMIN)).json()["resets"]

    def settled(self, vmid: int) -> list[dict[str, Any]]:
        """The guest's history once its newest attempt has an outcome (waits for it)."""
        def done() -> list[dict[str, Any]] | None:
            rows = [r for r in self.history(vmid) if r["attempt"] is not None]
            return rows if rows and rows[0]["outcome"] != "pending" else None
        return wait_for(done, 90, f"the outcome of guest {vmid}'s reset")

    def webhook_metric(self, name: str, **labels: str) -> float:
        return sample(requests.get(f"{self.webhook}/metrics", timeout=10).text, name, **labels)

    def am_metric(self, name: str, **labels: str) -> float:
        return sample(requests.get(f"{self.am}/metrics", timeout=10).text, name, **labels)

    def am_failures(self) -> float:
        """Alertmanager's failed webhook deliveries (each one is retried)."""
        return self.am_metric("alertmanager_notification_requests_failed_total", integration="webhook")


@contextmanager
def remediation(folder: Path, database_url: str, policy: dict[str, Any] | None = None, guests: int = 12,
                task_seconds: float = 0.2) -> Iterator[Remediation]:
    """Simulator, webhook and Alertmanager started; all stopped at the end, also after a failure."""
    from vmhealth.simulator.testing import running_simulator

    with ExitStack() as stack:
        sim = stack.enter_context(running_simulator(nodes=2, guests=guests, boot_seconds=0.5,
                                                    task_seconds=task_seconds))
        parts = Remediation(sim, folder, database_url, policy)
        stack.callback(parts.stop_webhook)
        stack.callback(parts.stop_alertmanager)
        parts.start_webhook()
        parts.start_alertmanager()
        yield parts
