"""`vmhealth exporter` as a user runs it: a real gunicorn process on loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests
import yaml

from tests.helpers.exporter import API_KEY, report
from vmhealth.stack.launcher import Child, clean_env, vmhealth_command
from vmhealth.stack.processes import free_port


def write_config(tmp_path: Path, port: int, pve_port: int) -> Path:
    secret = tmp_path / "pve-secret"
    secret.write_text("secret-uuid\n")
    config = {
        "clusters": [{"name": "lab", "host": f"127.0.0.1:{pve_port}", "token_id": "monitor@pve!vmhealth",
                      "token_secret_file": str(secret), "verify_ssl": False, "timeout": "1s"}],
        "exporter": {"listen": f"127.0.0.1:{port}", "api_key": API_KEY, "per_vm_keys": False, "poll_interval": "1s",
                     "flush_interval": "1s", "database_url": f"sqlite:///{tmp_path}/exporter.db"},
    }
    path = tmp_path / "vmhealth.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def exporter(config: Path, url: str, log_path: Path) -> Child:
    return Child("exporter", vmhealth_command("exporter", config), log_path, f"{url}/readyz", clean_env(),
                 stop_timeout=20)


def test_exporter_serves_with_proxmox_unreachable_and_keeps_no_guest_proxmox_never_listed(tmp_path):
    """Heartbeats are taken while Proxmox is down; a guest no poll ever listed lives in memory only, so a
    restart brings back none (those Proxmox listed are restored: test_exporter_persistence.py)."""
    port, pve_port = free_port(), free_port()  # nothing listens on pve_port: Proxmox is down
    config = write_config(tmp_path, port, pve_port)
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "exporter.log"
    proc = exporter(config, url, log_path)
    with proc.started(20):
        reply = requests.post(f"{url}/api/health/report", json=report(100), headers={"X-API-Key": API_KEY}, timeout=5)
        assert reply.status_code == 200, reply.text
        page = requests.get(f"{url}/metrics", timeout=5).text
        assert 'vmhealth_pve_up{cluster="lab"} 0' in page
        line = next(x for x in page.splitlines() if x.startswith("vmhealth_heartbeat_timestamp_seconds{"))
        first_seen = float(line.rsplit(" ", 1)[1])
    assert proc.process.returncode == 0, log_path.read_text()
    assert "secret-uuid" not in log_path.read_text() and API_KEY not in log_path.read_text()

    assert first_seen > 0
    with proc.started(20):  # restarted on the same database
        page = requests.get(f"{url}/metrics", timeout=5).text
        assert not [x for x in page.splitlines() if x.startswith("vmhealth_heartbeat_timestamp_seconds{")]


def test_exporter_refuses_a_broken_config_with_the_check_config_lines(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("clusters:\n  - name: lab\n    host: h\n    tokn_id: x\nexporter:\n  listen: nowhere\n")
    run = [sys.executable, "-m", "vmhealth"]
    served = subprocess.run([*run, "exporter", "--config", str(path)], capture_output=True, text=True, timeout=30)
    checked = subprocess.run([*run, "check-config", str(path)], capture_output=True, text=True, timeout=30)
    assert served.returncode == 2 and checked.returncode == 2
    expected = [
        "clusters[0].tokn_id: unknown key (did you mean 'token_id'?)",
        "exporter.listen: 'nowhere' is not HOST:PORT (for example 127.0.0.1:9747)",
        "clusters[0].token_secret: missing (give token_id + token_secret, or user + password)",
        "exporter.api_key: missing",
    ]
    for line in expected:
        assert line in served.stderr and line in checked.stderr
