"""Reading a guest's heartbeat age before a reset: from the exporters' read API (`responses` here; the
real exporter in test_security_heartbeat_veto.py) and what an unanswered source means."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import requests
import responses

from vmhealth.webhook.heartbeat import HeartbeatReader

A, B = "http://exporter-a:9747", "http://exporter-b:9747"
NOW = datetime(2026, 12, 4, 3, 0, 0, tzinfo=UTC)


def row(age: float) -> dict[str, str]:
    last = (NOW - timedelta(seconds=age)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"id": "lab/101", "lastHeartbeat": last}


def date() -> dict[str, str]:
    return {"Date": format_datetime(NOW, usegmt=True)}


@responses.activate
def test_the_freshest_exporter_wins_and_an_unreachable_one_is_no_error_when_another_answered() -> None:
    responses.get(f"{A}/api/vms/101", json=row(300), headers=date())
    responses.get(f"{B}/api/vms/101", json=row(7.5), headers=date())
    read = HeartbeatReader(None, [A, B]).age("lab", 101)
    assert (read.age, read.source, read.error) == (7.5, "exporter", "")
    assert responses.calls[0].request.params == {"cluster": "lab"}

    responses.replace(responses.GET, f"{B}/api/vms/101", body=requests.ConnectionError("refused"))
    read = HeartbeatReader(None, [A, B]).age("lab", 101)
    assert (read.age, read.error) == (300, "")


@responses.activate
def test_no_exporter_answering_is_an_error_and_a_guest_none_knows_is_no_age() -> None:
    responses.get(f"{A}/api/vms/101", body=requests.ConnectionError("refused"))
    responses.get(f"{B}/api/vms/101", status=500, json={"error": "boom"})
    read = HeartbeatReader(None, [A, B]).age("lab", 101)
    assert read.age is None and f"{A}: ConnectionError" in read.error and f"{B}: HTTPError" in read.error

    responses.replace(responses.GET, f"{A}/api/vms/101", status=404, json={"error": "no guest"})
    responses.replace(responses.GET, f"{B}/api/vms/101", json={"id": "lab/101", "lastHeartbeat": None},
                      headers=date())
    read = HeartbeatReader(None, [A, B]).age("lab", 101)
    assert (read.age, read.error) == (None, "")


def test_nothing_configured_reads_nothing_and_odd_cluster_names_are_not_queried() -> None:
    assert not HeartbeatReader(None, []).configured
    assert HeartbeatReader(None, []).age("lab", 101).age is None
    read = HeartbeatReader("http://prometheus:9090", []).age('lab"} or vector(1) #', 101)
    assert read.age is None and "cannot be queried" in read.error


@responses.activate
def test_an_exporter_with_a_read_token_is_read_with_it_and_a_refusal_is_an_error() -> None:
    """The webhook sends exporter.read_token of its configuration; without it the exporter's 401 is no age."""
    token = "exporter-read-token-0123"
    responses.get(f"{A}/api/vms/101", json=row(12), headers=date(),
                  match=[responses.matchers.header_matcher({"Authorization": f"Bearer {token}"})])
    responses.get(f"{A}/api/vms/101", status=401, json={"error": "missing or wrong read token"})
    read = HeartbeatReader(None, [A], exporter_token=token).age("lab", 101)
    assert (read.age, read.error) == (12, "")
    read = HeartbeatReader(None, [A]).age("lab", 101)
    assert read.age is None and "401" in read.error
