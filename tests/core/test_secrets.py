"""Secrets are never logged, echoed or put on a command line.

The exporter and the webhook run as real processes at --log-level debug, with every kind of secret
configured (agent key, per-VM key, webhook and admin tokens, Proxmox token secrets, a database
password), from files and the environment. The test provokes what makes programs talk: wrong keys
and tokens, bad payloads, Proxmox down and refusing, a real reset, refused configurations and an
unreachable database; then it greps all their output, every reply and every command line for each
secret's value.

Cost: about 25 s (two gunicorn processes, a simulator, a few CLI runs, PostgreSQL).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.helpers.servers import (
    ADMIN_TOKEN,
    AGENT_KEY,
    METRICS_TOKEN,
    READ_TOKEN,
    VIEWER_TOKEN,
    WEBHOOK_TOKEN,
    bearer,
    serve,
)
from vmhealth.cli import COMMANDS, build_parser
from vmhealth.keys import derive_vm_key
from vmhealth.simulator.testing import running_simulator
from vmhealth.stack.processes import free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
PVE_SECRET = "pve-token-secret-6b0d2f"
DB_PASSWORD = "db-password-0c7e19"
SECRET_WORDS = ("token", "secret", "password", "passwd", "api-key", "apikey")


def with_password(url: str) -> str:
    """The test database's URL with a password in it (the server trusts local connections anyway)."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{DB_PASSWORD}@{host}"


def run_cli(*args: str) -> str:
    """A vmhealth command's output, run without the test run's VMHEALTH_* switches."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMHEALTH_")}
    result = subprocess.run([sys.executable, "-m", "vmhealth", *args], capture_output=True, text=True, timeout=120,
                            env=env)
    return f"$ vmhealth {' '.join(args)} -> {result.returncode}\n{result.stdout}{result.stderr}"


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def test_no_command_takes_a_secret_on_its_command_line() -> None:
    """Secrets come from files or the environment; only the test tool `vmhealth sim` takes them as flags."""
    checked = 0
    for name in COMMANDS:
        if name == "sim":
            continue
        parser = build_parser(name)
        sub = next(a for a in parser._actions if a.dest == "command").choices[name]
        for action in sub._actions:
            for option in action.option_strings:
                checked += 1
                assert not any(word in option for word in SECRET_WORDS), f"vmhealth {name} {option}"
    assert checked > 20


def test_secrets_never_appear_in_logs_replies_or_command_lines(tmp_path: Path, postgres_url: str) -> None:
    per_vm_key = derive_vm_key(AGENT_KEY, "sim", 101)
    seen: list[str] = []  # every reply body and CLI output
    (tmp_path / "agent-key").write_text(AGENT_KEY + "\n")
    (tmp_path / "admin-token").write_text(ADMIN_TOKEN + "\n")
    with running_simulator(nodes=2, guests=6, token_secret=PVE_SECRET, boot_seconds=0.1, task_seconds=0.1) as sim:
        secrets = {"agent key": AGENT_KEY, "per-VM key": per_vm_key, "webhook token": WEBHOOK_TOKEN,
                   "admin token": ADMIN_TOKEN, "database password": DB_PASSWORD, "read token": READ_TOKEN,
                   "viewer token": VIEWER_TOKEN, "metrics token": METRICS_TOKEN,
                   **{f"Proxmox {role} token secret": sim.cluster_config(role=role)["token_secret"]
                      for role in ("full", "audit", "power")}}
        exporter_cfg = {"clusters": [sim.cluster_config(role="audit")],
                        "exporter": {"api_key_file": str(tmp_path / "agent-key"), "poll_interval": "1s",
                                     "flush_interval": "1s", "database_url": f"sqlite:///{tmp_path}/exporter.db",
                                     "read_token": READ_TOKEN}}
        webhook_cfg = {"clusters": [sim.cluster_config(role="power")],
                       "webhook": {"admin_token_file": str(tmp_path / "admin-token"), "viewer_token": VIEWER_TOKEN,
                                   "metrics_token": METRICS_TOKEN,
                                   "database_url": with_password(postgres_url),
                                   "policy": {"boot_grace": "0s", "task_timeout": "10s", "cooldown": "1s"}}}
        token_env = {"VMHEALTH_WEBHOOK_TOKEN": WEBHOOK_TOKEN}
        with serve("exporter", exporter_cfg, tmp_path, log_level="debug") as exporter, \
                serve("webhook", webhook_cfg, tmp_path, log_level="debug", env=token_env) as webhook:
            provoke_exporter(exporter.url, sim, per_vm_key, seen)
            provoke_webhook(webhook.url, sim, seen)
            seen.append(cmdline(exporter.process.pid) + cmdline(webhook.process.pid))
            seen.append(run_cli("history", "--config", str(tmp_path / "webhook.yml"), "--url", webhook.url))
        seen.append(exporter.output() + webhook.output())
        seen.extend(provoke_config_errors(tmp_path, sim, postgres_url))
    everything = "\n".join(seen)
    assert "unauthorized" in everything.lower() or "wrong" in everything.lower()  # the provocations happened
    assert "Permission check failed" in everything, "the Proxmox refusal was provoked and logged"
    leaks = {name: context(everything, value) for name, value in secrets.items() if value in everything}
    assert leaks == {}, f"secrets found in logs or replies: {leaks}"


def provoke_exporter(url: str, sim: Any, per_vm_key: str, seen: list[str]) -> None:
    report = {"hostname": "vm101", "vmid": "101", "cpuUsage": 3}
    for key, body in [(AGENT_KEY, report), (per_vm_key, report), ("wrong-" + AGENT_KEY, report),
                      (per_vm_key, {**report, "vmid": "102"}), (AGENT_KEY[:-1], report),
                      (AGENT_KEY, {"hostname": 5, "vmid": "x", "cpuUsage": "NaN"}), (AGENT_KEY, "not an object")]:
        reply = requests.post(f"{url}/api/health/report", json=body, headers={"X-API-Key": key}, timeout=30)
        seen.append(reply.text)
    seen.append(requests.post(f"{url}/api/health/report", data=b"{broken", timeout=30,
                              headers={"X-API-Key": AGENT_KEY, "Content-Type": "application/json"}).text)
    sim.api_down(500)
    time.sleep(2.5)  # two failed polls
    sim.api_up()
    sim.revoke_audit()
    time.sleep(1.5)
    sim.restore_audit()
    for path in ("/metrics", "/api/vms", "/api/status", "/readyz", "/api/vms/101"):
        for headers in ({}, bearer(READ_TOKEN + "x"), bearer(READ_TOKEN)):
            seen.append(requests.get(f"{url}{path}", timeout=30, headers=headers).text)


def provoke_webhook(url: str, sim: Any, seen: list[str]) -> None:
    for vmid in (101, 103):  # really hung: a working guest's QEMU guest agent answers, and nothing is reset
        sim.hang(vmid)
    alert = {"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "fingerprint": "fp101", "startsAt": "2026-01-01T00:00:00Z",
         "labels": {"alertname": "VMHung", "action": "reset", "cluster": "sim", "vmid": "101"}}]}
    for headers, body in [({}, alert), (bearer("wrong"), alert), (bearer(ADMIN_TOKEN), alert),
                          (bearer(WEBHOOK_TOKEN), {"version": "3"}), (bearer(WEBHOOK_TOKEN), alert)]:
        seen.append(requests.post(f"{url}/alerts", json=body, headers=headers, timeout=30).text)
    wait_for(lambda: sim.resets(101), 30, "the alert's reset")
    for headers in ({}, bearer(WEBHOOK_TOKEN), bearer(ADMIN_TOKEN + "x")):
        seen.append(requests.post(f"{url}/api/vms/102/reset", json={}, headers=headers, timeout=60).text)
    sim.revoke_power()  # the next reset fails with Proxmox's 403
    seen.append(requests.post(f"{url}/api/vms/103/reset", json={"reason": "x"}, headers=bearer(ADMIN_TOKEN),
                              timeout=60).text)
    sim.restore_power()
    sim.api_down(500)
    seen.append(requests.post(f"{url}/api/vms/104/reset", json={"reason": "y"}, headers=bearer(ADMIN_TOKEN),
                              timeout=60).text)
    sim.api_up()
    for path in ("/metrics", "/api/resets", "/api/vms/101/reset-history"):
        for headers in ({}, bearer(VIEWER_TOKEN[:-1]), bearer(VIEWER_TOKEN), bearer(METRICS_TOKEN)):
            seen.append(requests.get(f"{url}{path}", timeout=30, headers=headers).text)


def provoke_config_errors(folder: Path, sim: Any, postgres_url: str) -> list[str]:
    """check-config on broken files full of secrets, and servers refusing to start."""
    broken = {"clusters": [{**sim.cluster_config(role="power"), "tokn_id": "x", "timeout": "soon"}],
              "exporter": {"api_key": AGENT_KEY, "listen": "nowhere", "database_url": with_password(postgres_url)},
              "webhook": {"token": WEBHOOK_TOKEN, "admin_token": ADMIN_TOKEN, "threads": "many",
                          "database_url": with_password(postgres_url)}}
    path = folder / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    good = {"clusters": [sim.cluster_config(role="audit")],
            "exporter": {"api_key": AGENT_KEY, "listen": f"127.0.0.1:{free_port()}",
                         "database_url": with_password(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")}}
    unreachable = folder / "no-database.yml"
    unreachable.write_text(yaml.safe_dump(good))
    out = [run_cli("check-config", str(path)), run_cli("check-config", str(unreachable), "--show"),
           run_cli("exporter", "--config", str(path), "--log-level", "debug"),
           run_cli("webhook", "--config", str(path), "--log-level", "debug")]
    started = run_cli("exporter", "--config", str(unreachable), "--log-level", "debug")
    out.append(started)
    assert not started.splitlines()[0].endswith("-> 0"), "the exporter must refuse to start without its database"
    assert "problem(s)" in out[0] and "tokn_id" in out[0]
    return out


def context(text: str, value: str) -> list[str]:
    """The lines holding `value`, for the failure message."""
    return [line[:300] for line in text.splitlines() if value in line][:5]
