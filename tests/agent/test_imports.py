"""The agent goes into thousands of guests with psutil only: it must not pull in the server side."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ["flask", "sqlalchemy", "proxmoxer", "requests", "yaml", "prometheus_client", "alembic", "apscheduler",
             "werkzeug", "gunicorn", "vmhealth.exporter.app", "vmhealth.webhook", "vmhealth.simulator"]

AGENT_PROBE = """
import json, sys
import vmhealth.agent.__main__, vmhealth.agent.cli, vmhealth.agent.runner, vmhealth.agent.server
import vmhealth.agent.check, vmhealth.agent.exposition, vmhealth.agent.identity
print(json.dumps(sorted(sys.modules)))
"""

COMMAND_PROBE = """
import json, sys
from vmhealth.cli import build_parser
build_parser("agent")
print(json.dumps(sorted(sys.modules)))
"""


def server_side_modules(probe: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    loaded = json.loads(done.stdout)
    return [name for name in loaded if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)]


def test_the_agent_imports_nothing_of_the_server_side() -> None:
    assert server_side_modules(AGENT_PROBE) == []


def test_an_http_agent_does_not_load_ssl_or_the_email_package() -> None:
    """About 6 MiB of resident memory per guest: loaded only for an https:// exporter."""
    make_pusher = "from vmhealth.agent.push import Pusher; Pusher('http://x:1', 'k', 1)\n"
    probe = AGENT_PROBE.replace("print(", make_pusher + "print(")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    loaded = set(json.loads(done.stdout))
    assert loaded.isdisjoint({"ssl", "email", "http.client", "http.server", "urllib.request"})


def test_the_vmhealth_agent_command_imports_nothing_of_the_server_side() -> None:
    assert server_side_modules(COMMAND_PROBE) == []


def test_agent_runs_once_without_pyyaml_using_env_only(tmp_path) -> None:
    """With PyYAML made unimportable, a JSON config and environment variables still work."""
    (tmp_path / "yaml.py").write_text("raise ImportError('PyYAML is not installed here')\n")
    config = tmp_path / "agent.json"
    config.write_text(json.dumps({"agent": {"vmid": 321}}))
    env = {"PYTHONPATH": str(tmp_path), "VMHEALTH_AGENT_CLUSTER": "lab", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "vmhealth.agent", "--config", str(config), "--once"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["vmid"] == "321" and report["cluster"] == "lab" and report["status"] == "running"
