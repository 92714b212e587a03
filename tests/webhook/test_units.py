"""Unit tests of the webhook's pure parts: payload parsing, policy rules, task following, the table."""

from __future__ import annotations

from typing import Any

import pytest
import responses

from tests.helpers.webhook import BASE, firing, make_config, payload
from vmhealth.config import PolicyConfig
from vmhealth.pve import PveClient
from vmhealth.webhook import actions, policy
from vmhealth.webhook.api import parse_since
from vmhealth.webhook.historycli import format_table
from vmhealth.webhook.payload import PayloadError, normalise_time, parse_notification


def test_times_keep_their_precision_and_become_utc() -> None:
    assert normalise_time("2026-01-01T00:05:00.123456789Z", "t") == "2026-01-01T00:05:00.123456789Z"
    assert normalise_time("2026-01-01T02:05:00.500+02:00", "t") == "2026-01-01T00:05:00.5Z"
    assert normalise_time("2026-01-01T00:05:00Z", "t") == "2026-01-01T00:05:00Z"
    with pytest.raises(PayloadError, match="startsAt"):
        normalise_time("2026-13-01T00:00:00Z", "alerts[0].startsAt")


def test_each_alert_status_decides_and_unknown_keys_are_ignored() -> None:
    mixed = parse_notification(payload("v4-grouped-mixed-status.json"), "lab")
    assert mixed.status == "firing" and [a.status for a in mixed.alerts] == ["firing", "resolved"]
    newer = parse_notification(payload("v4-firing-am0.34-extra-fields.json"), "lab")
    assert newer.alerts[0].vmid == 100 and newer.alerts[0].action == "reset" and newer.alerts[0].cluster == "lab"
    escaped = parse_notification(payload("v4-receiver-name-escaped.json"), None)
    assert escaped.receiver == "pve\\.remediator" and escaped.alerts[0].cluster is None
    assert parse_notification(payload("v4-truncated-max_alerts-1.json")).truncated == 1


def test_vmid_comes_from_the_vmid_or_the_id_label() -> None:
    body = firing(100)
    del body["alerts"][0]["labels"]["vmid"]
    body["alerts"][0]["labels"]["id"] = "lxc/205"
    assert parse_notification(body).alerts[0].vmid == 205


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.pop("alerts"), "alerts: expected a list"),
        (lambda b: b["alerts"][0].pop("fingerprint"), "alerts[0].fingerprint"),
        (lambda b: b["alerts"][0].update(status="pending"), "alerts[0].status"),
        (lambda b: b["alerts"][0]["labels"].update(vmid="12x"), "alerts[0].labels.vmid"),
        (lambda b: b["alerts"][0].update(labels=["a"]), "alerts[0].labels: expected an object"),
        (lambda b: b.update(truncatedAlerts=-1), "truncatedAlerts"),
    ],
)
def test_malformed_payloads_name_the_field(change: Any, message: str) -> None:
    body = firing(100)
    change(body)
    with pytest.raises(PayloadError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_notification(body)


def _policy(**values: Any) -> PolicyConfig:
    return make_config("sqlite:///unused.db", **values).webhook.policy


def test_deny_wins_over_allow_and_opt_in_needs_a_match() -> None:
    p = _policy(opt_in=True, allow_vmids=[100], allow_tags=["reset-ok"], deny_vmids=[100])
    assert policy.check_allowed(p, 100, []).reason == "denied-vmid"
    assert policy.check_allowed(p, 101, ["reset-ok"]) is None
    assert policy.check_allowed(p, 102, ["prod"]).reason == "not-opted-in"
    assert policy.check_allowed(_policy(), 103, ["vmhealth-noreset"]).reason == "denied-tag"
    assert policy.check_allowed(_policy(), 104, []) is None


def test_node_and_quorum() -> None:
    standalone = [{"type": "node", "name": "pve1", "online": 1}]
    assert policy.check_node(standalone, "pve1") is None
    assert policy.check_node(standalone, "pve9").reason == "node-offline"
    lost = [{"type": "cluster", "name": "c", "quorate": 0}, *standalone]
    assert policy.check_node(lost, "pve1").reason == "no-quorum"


def test_guest_state_rules() -> None:
    running = {"status": "running", "qmpstatus": "running", "uptime": 600}
    assert policy.check_guest("qemu", running, 180) is None
    assert policy.check_guest("lxc", {"status": "running", "uptime": 600}, 180) is None
    assert policy.check_guest("qemu", {**running, "qmpstatus": "prelaunch"}, 180).reason == "paused"
    assert policy.check_guest("qemu", {**running, "uptime": 100}, 180).reason == "booting"
    assert policy.check_guest("qemu", {**running, "lock": "migrate"}, 180).detail == "lock=migrate"


def test_circuit_breaker_cooldown_and_rate() -> None:
    assert policy.check_circuit(1, 2, 0.3, 2) is None  # one hung guest never trips it
    assert policy.check_circuit(2, 10, 0.3, 2) is None
    assert policy.check_circuit(4, 10, 0.3, 2).reason == "circuit-open"
    assert [policy.cooldown_after(n, 600, 3600) for n in (1, 2, 3, 4, 5)] == [600, 1200, 2400, 3600, 3600]
    assert policy.check_rate(10, 10).reason == "rate-limited" and policy.check_rate(9, 10) is None
    assert policy.action_for("lxc") == "reboot" and policy.action_for("qemu") == "reset"


@responses.activate
def test_follow_waits_for_the_task_and_keeps_its_error() -> None:
    client = PveClient(make_config("sqlite:///unused.db").clusters[0])
    upid = "UPID:pve1:0003A5C2:01F4B7A1:6955B964:qmreset:100:monitor@pve!vmhealth:"
    url = f"{BASE}/nodes/pve1/tasks/{upid.replace(':', '%3A').replace('!', '%21').replace('@', '%40')}/status"
    responses.get(url, json={"data": {"status": "running"}})
    responses.get(url, json={"data": {"status": "stopped", "exitstatus": "VM is locked (backup)"}})
    result = actions.follow(client, "pve1", upid, timeout=5, interval=0.01)
    assert (result.outcome, result.exitstatus) == ("failed", "VM is locked (backup)")
    assert actions.task_ok("WARNINGS: 1") and not actions.task_ok("can't lock file")


@responses.activate
def test_find_task_picks_our_task_type_for_this_guest() -> None:
    client = PveClient(make_config("sqlite:///unused.db").clusters[0])
    responses.get(f"{BASE}/nodes/pve1/tasks", json={"data": [
        {"upid": "UPID:a", "type": "qmreset", "id": "101", "starttime": 2000},
        {"upid": "UPID:b", "type": "qmstart", "id": "100", "starttime": 2000},
        {"upid": "UPID:c", "type": "qmreset", "id": "100", "starttime": 999},
        {"upid": "UPID:d", "type": "qmreset", "id": "100", "starttime": 2001},
    ]})
    assert actions.find_task(client, "pve1", "qemu", "reset", 100, since=1000) == "UPID:d"
    assert "source=all" in responses.calls[0].request.url


def test_since_and_the_history_table() -> None:
    assert parse_since("1h", now=10_000) == 6400
    assert parse_since("1700000000") == 1_700_000_000
    assert parse_since("2026-01-01T00:00:00Z") == 1767225600
    with pytest.raises(ValueError, match="since"):
        parse_since("last week")
    rows = [{"time": "2026-01-01T00:00:00.000Z", "cluster": "lab", "vmid": 100, "name": "a-very-long-guest-name",
             "action": "reset", "outcome": "skipped:locked", "attempt": None, "actor": "alertmanager",
             "error": "lock=backup", "forced": False}]
    lines = format_table(rows).splitlines()
    assert lines[0].split()[:3] == ["TIME", "CLUSTER", "VMID"]
    assert "skipped:locked" in lines[1] and lines[1].endswith("lock=backup") and "a-very-long-g~" in lines[1]
