"""The Prometheus rules, the example prometheus.yml and alertmanager.yml, checked by the real tools.

`promtool test rules` runs every case in prometheus/tests/; the checks below also make sure each
alert and recording rule has such a case (firing and not firing), that every runbook_url points at a
section of docs/runbook.md, and that `amtool` routes each kind of alert to the receiver it should.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.helpers.promtool import ROOT, TEST_FILES, run
from tests.helpers.requirements import binary

RULES = ROOT / "prometheus" / "rules"
RULE_FILES = sorted(RULES.glob("*.yml"))
ALERTMANAGER = ROOT / "alertmanager" / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/vmhealth/vmhealth/blob/main/docs/runbook.md#"
# The alert names DESIGN.md fixes; the rules may add more, never fewer.
CONTRACT_ALERTS = {
    "VMHeartbeatStale", "VMHung", "VMResetFailed", "VMAgentMissing", "VMHighCPU", "VMHighMemory",
    "VMDiskAlmostFull", "ProxmoxAPIDown", "ProxmoxNodeDown", "VMHealthMassHeartbeatLoss",
    "VMHealthExporterDown", "VMHealthWebhookDown",
}




def rules() -> list[dict]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            found.extend(group["rules"])
    return found


def alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def unit_cases() -> list[dict]:
    return [case for path in TEST_FILES for case in yaml.safe_load(path.read_text())["tests"]]


# --- promtool ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(promtool: str, path: Path) -> None:
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config(promtool: str) -> None:
    """The example prometheus.yml is valid and loads both rule files."""
    result = run(promtool, "check", "config", "prometheus.yml", cwd=ROOT / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(promtool: str, path: Path) -> None:
    result = run(promtool, "test", "rules", path.name, cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_fails_on_a_wrong_expectation(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: the same case with one annotation changed is reported as a failure."""
    source = (ROOT / "prometheus" / "tests" / "hung.yml").read_text()
    assert "is 10m 0s old and" in source
    broken = source.replace("is 10m 0s old and", "is 10m 1s old and").replace("../rules/", f"{RULES}/")
    (tmp_path / "broken.yml").write_text(broken)
    result = run(promtool, "test", "rules", "broken.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "10m 1s old" in result.stdout + result.stderr


# --- coverage of the rules by the unit tests ----------------------------------------------------

def test_the_contract_alerts_exist_with_severity_and_annotations() -> None:
    found = alerts()
    assert set(found) >= CONTRACT_ALERTS
    for name, rule in found.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        assert "{{" not in rule["annotations"]["summary"], f"{name}: summary is a static sentence"
        assert "{{" in rule["annotations"]["description"], f"{name}: description is templated"
    assert found["VMHung"]["labels"] == {"severity": "critical", "action": "reset"}
    assert [n for n, r in found.items() if r["labels"].get("action")] == ["VMHung"]


def test_every_alert_has_firing_and_not_firing_cases() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in unit_cases():
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = set(alerts())
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown not firing"


def test_every_recording_rule_is_checked() -> None:
    records = {rule["record"] for rule in rules() if "record" in rule}
    checked = set()
    for case in unit_cases():
        for check in case.get("promql_expr_test", []):
            if check.get("exp_samples"):
                checked.update(re.findall(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", check["expr"]))
    assert records - checked == set(), "recording rules without a promql_expr_test"


def test_recording_rule_names_follow_level_metric_operations() -> None:
    for rule in rules():
        if "record" in rule:
            assert re.fullmatch(r"[a-z_]+:vmhealth_[a-z_]+:[a-z][a-z0-9_]*", rule["record"]), rule["record"]


def _github_anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_every_runbook_url_has_a_section() -> None:
    text = RUNBOOK.read_text()
    anchors = {_github_anchor(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}
    for name, rule in alerts().items():
        url = rule["annotations"]["runbook_url"]
        assert url == RUNBOOK_URL + name.lower(), name
        assert name.lower() in anchors, f"docs/runbook.md has no section {name}"


# --- Alertmanager ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def amtool() -> str:
    return binary("amtool")


def test_amtool_check_config(amtool: str) -> None:
    result = run(amtool, "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 inhibit rules" in result.stdout and "2 receivers" in result.stdout


ROUTES = [
    ("vmhealth-webhook", {"alertname": "VMHung", "action": "reset", "severity": "critical", "cluster": "lab",
                          "vmid": "100", "node": "pve1"}),
    ("default", {"alertname": "VMHeartbeatStale", "severity": "warning", "cluster": "lab", "vmid": "100"}),
    ("default", {"alertname": "VMResetFailed", "severity": "critical", "cluster": "lab", "vmid": "100"}),
    ("default", {"alertname": "VMHealthMassHeartbeatLoss", "severity": "critical", "cluster": "lab"}),
    ("default", {"alertname": "ProxmoxNodeDown", "severity": "critical", "cluster": "lab", "node": "pve1"}),
    ("default", {"alertname": "VMHealthWebhookDown", "severity": "critical", "job": "vmhealth-webhook"}),
    # only the label matters, not the alert name
    ("vmhealth-webhook", {"alertname": "SomethingElse", "action": "reset"}),
]


@pytest.mark.parametrize(("receiver", "labels"), ROUTES, ids=lambda v: v if isinstance(v, str) else v["alertname"])
def test_amtool_routes(amtool: str, receiver: str, labels: dict[str, str]) -> None:
    args = [f"{k}={v}" for k, v in labels.items()]
    result = run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                 f"--verify.receivers={receiver}", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_amtool_routes_verification_can_fail(amtool: str) -> None:
    result = run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                 "--verify.receivers=vmhealth-webhook", "alertname=VMHeartbeatStale", "cluster=lab")
    assert result.returncode != 0


def test_webhook_receiver_settings() -> None:
    """The settings the webhook relies on, as they are written in alertmanager.yml."""
    config = yaml.safe_load(ALERTMANAGER.read_text())
    (route,) = [r for r in config["route"]["routes"] if r["receiver"] == "vmhealth-webhook"]
    assert route["matchers"] == ['action="reset"']
    assert route["group_by"] == ["cluster", "vmid"]
    assert not route.get("continue", False)
    (receiver,) = [r for r in config["receivers"] if r["name"] == "vmhealth-webhook"]
    (hook,) = receiver["webhook_configs"]
    assert hook["url"] == "http://127.0.0.1:9749/alerts"
    assert hook["send_resolved"] is True
    assert hook["http_config"]["authorization"] == {"type": "Bearer",
                                                    "credentials_file": "/etc/vmhealth/webhook-token"}
