"""The stack launcher's generated configuration: scaled rules stay valid and keep their order."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from vmhealth.bundled import bundled_file
from vmhealth.durations import parse_duration
from vmhealth.stack.running import StackSettings, alertmanager_config, write_scaled_rules


def test_scaled_rules_pass_promtool_and_keep_their_order(tmp_path: Path, promtool: str) -> None:
    source = bundled_file("prometheus/rules/vmhealth-alerts.yml")
    scaled = write_scaled_rules(source, tmp_path / "alerts.yml", 1 / 12)
    check = subprocess.run([promtool, "check", "rules", str(scaled)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    rules = {r["alert"]: r for g in yaml.safe_load(scaled.read_text())["groups"] for r in g["rules"] if "alert" in r}
    assert parse_duration(rules["VMHung"]["for"]) == 1  # 15s / 12, at least 1s
    assert parse_duration(rules["VMAgentSilent"]["for"]) == 5  # 1m / 12
    # the mass-loss rule holds VMHung inside Prometheus; its own alert is never slower than VMHung
    assert parse_duration(rules["VMHealthMassHeartbeatLoss"]["for"]) <= parse_duration(rules["VMHung"]["for"])
    assert "for" not in rules["VMResetFailed"] or parse_duration(rules["VMResetFailed"]["for"]) >= 1


def test_alertmanager_config_sends_to_every_webhook_replica(tmp_path: Path) -> None:
    token = tmp_path / "token"
    config = alertmanager_config(StackSettings(group_wait="1s"), ["http://127.0.0.1:1", "http://127.0.0.1:2"], token)
    [receiver] = [r for r in config["receivers"] if r["name"] == "vmhealth-webhook"]
    assert [c["url"] for c in receiver["webhook_configs"]] == ["http://127.0.0.1:1/alerts", "http://127.0.0.1:2/alerts"]
    assert all(c["http_config"]["authorization"]["credentials_file"] == str(token) and c["send_resolved"]
               for c in receiver["webhook_configs"])
    assert all(route["group_wait"] == "1s" for route in [config["route"], *config["route"]["routes"]])
    assert config["inhibit_rules"], "the repository's inhibitions are kept"

