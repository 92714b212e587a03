"""Shared pieces of the bad-input and security suites: `vmhealth exporter` / `vmhealth webhook` as real
gunicorn processes on free loopback ports, always stopped, with their whole output kept for greps.

No tests live here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import yaml

from vmhealth.stack.launcher import Child, clean_env, vmhealth_command
from vmhealth.stack.processes import free_port

AGENT_KEY = "agent-shared-key-7f3e9c1d"
WEBHOOK_TOKEN = "am-bearer-token-5b2a8e44"
ADMIN_TOKEN = "admin-bearer-token-c91d07aa"
VIEWER_TOKEN = "viewer-bearer-token-6e02b7d4"
READ_TOKEN = "exporter-read-token-3f81c0a9"
METRICS_TOKEN = "webhook-metrics-token-58d2e1b7"


@dataclass
class Served:
    """A running server: its base URL and its process, whose whole output is kept for greps."""

    url: str
    child: Child

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.child.process is not None
        return self.child.process

    @property
    def log(self) -> Path:
        return self.child.log_path

    def output(self) -> str:
        return self.child.output()


@contextmanager
def serve(component: str, config: dict[str, Any], folder: Path, *, log_level: str = "info",
          env: dict[str, str] | None = None, start_timeout: float = 60,
          tls: dict[str, Any] | None = None) -> Iterator[Served]:
    """`vmhealth <component>` with `config` (its listen address set to a free port), stopped at the end.

    With `tls` (requests' `verify` and `cert`), it is served over https and probed with them.

    The child gets none of the test run's VMHEALTH_* switches, only `env`.
    """
    port = free_port()
    config = {**config, component: {**config.get(component, {}), "listen": f"127.0.0.1:{port}"}}
    path = folder / f"{component}.yml"
    path.write_text(yaml.safe_dump(config))
    url = f"{'https' if tls is not None else 'http'}://127.0.0.1:{port}"
    child = Child(f"vmhealth {component}", vmhealth_command(component, path, "--log-level", log_level),
                  folder / f"{component}.log", f"{url}/healthz", clean_env(**(env or {})), tls or {}, stop_timeout=20)
    with child.started(start_timeout):
        yield Served(url, child)


def exporter_config(sim: Any, folder: Path, role: str = "audit", **exporter: Any) -> dict[str, Any]:
    """An exporter section for a simulator (poll every second, SQLite in `folder`)."""
    return {
        "clusters": [sim.cluster_config(role=role)],
        "exporter": {"api_key": AGENT_KEY, "per_vm_keys": False, "poll_interval": "1s", "flush_interval": "1s",
                     "database_url": f"sqlite:///{folder}/exporter.db", **exporter},
    }


def webhook_config(sim: Any, folder: Path, role: str = "power", **policy: Any) -> dict[str, Any]:
    """A webhook section for a simulator with the test tokens (SQLite in `folder`)."""
    return {
        "clusters": [sim.cluster_config(role=role)],
        "webhook": {"token": WEBHOOK_TOKEN, "admin_token": ADMIN_TOKEN,
                    "database_url": f"sqlite:///{folder}/webhook.db",
                    "policy": {"boot_grace": "0s", "task_timeout": "20s", **policy}},
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


START = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def forged(vmids: list[int], status: str = "firing", tag: str = "") -> dict[str, Any]:
    """One notification with an alert per guest, as an attacker holding the token would send it."""
    now = START
    return {"version": "4", "status": status, "receiver": "vmhealth", "groupKey": "{}", "truncatedAlerts": 0,
            "alerts": [{"status": status, "startsAt": now, "fingerprint": f"forged{tag}{vmid}",
                        "labels": {"alertname": "VMHung", "action": "reset", "cluster": "sim", "vmid": str(vmid)}}
                       for vmid in vmids]}


def send(webhook: Served, body: dict[str, Any]) -> None:
    reply = requests.post(f"{webhook.url}/alerts", json=body, headers=bearer(WEBHOOK_TOKEN), timeout=30)
    assert reply.status_code == 200, reply.text


def decisions(webhook: Served) -> list[dict[str, Any]]:
    reply = requests.get(f"{webhook.url}/api/resets?limit=1000", timeout=10, headers=bearer(ADMIN_TOKEN))
    return reply.json()["resets"]
