"""What an operator installs: the systemd unit (checked by systemd itself), the cloud-init snippet."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

AGENT = Path(__file__).resolve().parents[2] / "agent"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (AGENT / "vmhealth-agent.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_runs_as_a_dedicated_user_restarts_always_and_is_hardened() -> None:
    unit = unit_settings()
    assert unit["User"] == ["vmhealth-agent"] and unit["Restart"] == ["always"]
    assert unit["EnvironmentFile"] == ["-/etc/default/vmhealth-agent"]
    for key in ("NoNewPrivileges", "ProtectKernelTunables", "PrivateDevices", "RestrictNamespaces"):
        assert unit[key] == ["yes"], key
    assert unit["ProtectSystem"] == ["strict"] and unit["CapabilityBoundingSet"] == [""]
    assert any("product_uuid" in cmd and cmd.startswith("-+") for cmd in unit["ExecStartPre"])


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    text = (AGENT / "vmhealth-agent.service").read_text()
    # The same unit with ExecStart pointing at a binary this machine has, so only the unit itself is judged.
    text = text.replace("/opt/vmhealth-agent/bin/vmhealth-agent", sys.executable + " -m vmhealth.agent")
    unit = tmp_path / "vmhealth-agent.service"
    unit.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if "vmhealth-agent" in line and "User=" not in line]
    assert done.returncode == 0 and problems == [], done.stdout + done.stderr


def test_cloud_init_installs_the_packaged_unit_and_keeps_the_key_private() -> None:
    text = (AGENT / "cloud-init.yaml").read_text()
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    files = {f["path"]: f for f in data["write_files"]}
    assert files["/etc/vmhealth/agent.key"]["permissions"] == "0640"
    config = yaml.safe_load(files["/etc/vmhealth/agent.yml"]["content"])
    assert config["agent"]["api_key_file"] == "/etc/vmhealth/agent.key"
    assert any("systemctl enable --now vmhealth-agent" in cmd for cmd in data["runcmd"])
    assert any(u.get("name") == "vmhealth-agent" for u in data["users"] if isinstance(u, dict))


def test_cloud_init_agent_config_is_valid_for_the_agent(tmp_path: Path) -> None:
    from vmhealth.config import load

    data = yaml.safe_load((AGENT / "cloud-init.yaml").read_text())
    files = {f["path"]: f for f in data["write_files"]}
    raw = yaml.safe_load(files["/etc/vmhealth/agent.yml"]["content"])
    key = tmp_path / "agent.key"
    key.write_text(files["/etc/vmhealth/agent.key"]["content"])
    raw["agent"]["api_key_file"] = str(key)
    config = load(raw=raw, components=("agent",), environ={})
    assert config.agent.api_key == "CHANGE-ME-agent-key" and config.agent.interval == 30


def test_the_unit_and_scripts_ship_in_the_package() -> None:
    from importlib.resources import files

    shipped = {p.name for p in files("vmhealth.agent").iterdir()}
    assert {"vmhealth-agent.service", "linux-agent.sh", "install-windows.ps1", "cloud-init.yaml"} <= shipped
