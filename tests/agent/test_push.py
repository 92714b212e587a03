"""The push client against a small stand-in exporter on loopback: replies, logging of state changes,
backoff, and TLS verification with a CA bundle."""

from __future__ import annotations

import logging
import random
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.exporter_stand_in import FakeExporter
from vmhealth.agent.push import Outcome, Pusher, next_delay


@pytest.fixture
def exporter() -> Iterator[FakeExporter]:
    server = FakeExporter()
    try:
        yield server
    finally:
        server.stop()


REPORT = {"hostname": "web-1", "status": "running", "vmid": "100", "cpuUsage": 1.0}


def test_accepted_report_carries_key_and_json(exporter: FakeExporter, caplog: pytest.LogCaptureFixture) -> None:
    pusher = Pusher(exporter.url + "/", "good-key", timeout=5)
    with caplog.at_level(logging.INFO, logger="vmhealth.agent.push"):
        outcome = pusher.send(REPORT)
    assert outcome.ok and outcome.status == 200
    assert exporter.reports == [REPORT]
    assert exporter.headers_seen[0]["Content-Type"] == "application/json"
    assert pusher.last_success is not None and pusher.failures_total == 0
    assert [r.getMessage() for r in caplog.records] == [f"reporting to {exporter.url}/api/health/report"]


def test_wrong_key_is_reported_once_and_clearly_and_never_logs_the_key(
    exporter: FakeExporter, caplog: pytest.LogCaptureFixture
) -> None:
    pusher = Pusher(exporter.url, "wrong-key-123", timeout=5)
    with caplog.at_level(logging.INFO, logger="vmhealth.agent.push"):
        outcomes = [pusher.send(REPORT) for _ in range(4)]
    assert all(o.state == "refused:401" and not o.transient for o in outcomes)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "401" in message and "missing or wrong API key" in message and "agent.api_key" in message
    assert "wrong-key-123" not in message
    assert pusher.failures_total == 4
    assert next_delay(30, outcomes[-1], pusher.failures_in_row) == 30  # a refusal waits the full interval


def test_400_names_each_bad_field(exporter: FakeExporter, caplog: pytest.LogCaptureFixture) -> None:
    exporter.status = 400
    exporter.reply = {"success": False, "error": "invalid report",
                      "fields": {"cpuUsage": "must be a number from 0 to 100"}}
    with caplog.at_level(logging.INFO, logger="vmhealth.agent.push"):
        outcome = Pusher(exporter.url, "good-key", timeout=5).send(REPORT)
    assert outcome.state == "refused:400"
    assert "cpuUsage: must be a number from 0 to 100" in caplog.records[0].getMessage()


def test_unreachable_then_back_logs_two_lines_for_many_failures(caplog: pytest.LogCaptureFixture) -> None:
    server = FakeExporter()
    port = server.server_address[1]
    server.stop()
    pusher = Pusher(f"http://127.0.0.1:{port}", "good-key", timeout=2)
    with caplog.at_level(logging.INFO, logger="vmhealth.agent.push"):
        outcomes = [pusher.send(REPORT) for _ in range(5)]
        assert all(o.transient for o in outcomes)
        revived = FakeExporter(port)
        try:
            assert pusher.send(REPORT).ok
        finally:
            revived.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "unreachable" in messages[0] and "after 5 failed attempt(s)" in messages[1]


def test_server_errors_are_transient(exporter: FakeExporter) -> None:
    exporter.status = 503
    exporter.reply = {"success": False, "error": "database busy"}
    outcome = Pusher(exporter.url, "good-key", timeout=5).send(REPORT)
    assert outcome.transient and outcome.status == 503 and "database busy" in outcome.detail


def test_backoff_grows_with_jitter_and_is_capped_at_the_interval() -> None:
    down = Outcome("unreachable", None, "refused")
    rng = random.Random(1)
    for failures, ceiling in [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (40, 30)]:
        delays = [next_delay(30, down, failures, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (failures, min(delays), max(delays))
        assert len(set(delays)) > 1  # jittered, so a fleet does not retry in step
    assert next_delay(30, Outcome("ok", 200, ""), 0) == 30


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl command."""
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_https_is_verified_and_a_ca_bundle_makes_it_trusted(tls_pair: tuple[Path, Path]) -> None:
    cert, key = tls_pair
    server = FakeExporter()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        untrusted = Pusher(url, "good-key", timeout=5).send(REPORT)
        assert untrusted.state == "refused:tls" and "agent.ca_bundle" in untrusted.detail
        assert Pusher(url, "good-key", timeout=5, ca_bundle=str(cert)).send(REPORT).ok
        assert Pusher(url, "good-key", timeout=5, verify_ssl=False).send(REPORT).ok
        assert len(server.reports) == 2
    finally:
        server.stop()
