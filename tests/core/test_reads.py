"""Who can read what (docs/security.md): the webhook's history needs the viewer or admin token unless
an operator opts out, and says so at start; /metrics and the exporter's read API need their token once
one is set, as a bearer token or the password of basic auth, which is what Prometheus can send."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.exporter import API_KEY, exporter_config, report
from tests.helpers.webhook import ADMIN, TOKEN, auth, make_config

VIEWER = "viewer-secret-token"
METRICS = "metrics-secret-token"
READ = "exporter-read-token-0123"
HISTORY = ("/api/resets", "/api/vms/100/reset-history")
EXPORTER_READS = ("/metrics", "/api/vms", "/api/vms/100", "/api/status")


def basic(password: str, user: str = "prometheus") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def webhook_app(tmp_path: Path, **keys: Any) -> Any:
    from vmhealth.webhook.app import create_app

    return create_app(make_config(f"sqlite:///{tmp_path}/webhook.db", {"viewer_token": VIEWER,
                                                                       "auth_failures_per_minute": 0, **keys}),
                      start_worker=False)


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[Any]:
    app = webhook_app(tmp_path)
    yield app
    app.extensions["vmhealth"].close()


def exporter_app(tmp_path: Path, **keys: Any) -> Any:
    from vmhealth.exporter.app import create_app

    config = exporter_config(tmp_path)
    config = replace(config, exporter=replace(config.exporter, auth_failures_per_minute=0, **keys))
    return create_app(config, start=False)


def test_the_history_needs_the_viewer_or_admin_token(webhook: Any) -> None:
    client = webhook.test_client()
    for path in HISTORY:
        for headers in ({}, auth(TOKEN), auth(VIEWER + "x"), auth(VIEWER[:-1]), {"X-API-Key": VIEWER}):
            reply = client.get(path, headers=headers)
            assert reply.status_code == 401, (path, headers)
            assert reply.headers["WWW-Authenticate"].startswith("Bearer") and VIEWER not in reply.get_data(True)
        for headers in (auth(VIEWER), auth(ADMIN), basic(VIEWER)):
            assert client.get(path, headers=headers).status_code == 200, (path, headers)


def test_the_viewer_token_only_reads(webhook: Any) -> None:
    client = webhook.test_client()
    for path in ("/api/vms/100/reset", "/api/vms/100/release", "/api/vms/100/close-incident", "/alerts"):
        assert client.post(path, json={}, headers=auth(VIEWER)).status_code == 401, path


def test_the_brakes_and_a_guests_metrics_need_the_viewer_or_admin_token(tmp_path: Path) -> None:
    app = webhook_app(tmp_path, public_history=True)
    try:
        client = app.test_client()
        for path in ("/api/remediation", "/api/vms/100/metrics"):
            for headers in ({}, auth(TOKEN), auth(VIEWER + "x")):
                assert client.get(path, headers=headers).status_code == 401, (path, headers)
        assert client.get("/api/remediation", headers=auth(VIEWER)).status_code == 200
        # past authentication: no webhook.prometheus_url here to read the guest's metrics from
        assert client.get("/api/vms/100/metrics", headers=auth(ADMIN)).status_code == 503
    finally:
        app.extensions["vmhealth"].close()


def test_public_history_is_an_opt_in_warned_about_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vmhealth.webhook.app"):
        app = webhook_app(tmp_path, public_history=True)
    try:
        warnings = [r.getMessage() for r in caplog.records if "public_history" in r.getMessage()]
        assert len(warnings) == 1 and "without a token" in warnings[0]
        for path in HISTORY:
            assert app.test_client().get(path).status_code == 200
        assert app.test_client().post("/api/vms/100/release", json={}).status_code == 401, "reads only"
    finally:
        app.extensions["vmhealth"].close()


def test_the_webhook_metrics_need_their_token_once_set(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    open_app = webhook_app(tmp_path)
    try:
        assert open_app.test_client().get("/metrics").status_code == 200, "without metrics_token: open"
    finally:
        open_app.extensions["vmhealth"].close()
    with caplog.at_level(logging.WARNING, logger="vmhealth.webhook.app"):
        app = webhook_app(tmp_path, metrics_token=METRICS, listen="0.0.0.0:9749")
    try:
        assert not [r for r in caplog.records if "metrics_token" in r.getMessage()], "set: nothing to warn about"
        client = app.test_client()
        for headers in ({}, auth(TOKEN), auth(METRICS + "x"), basic(METRICS + "x")):
            assert client.get("/metrics", headers=headers).status_code == 401, headers
        for headers in (auth(METRICS), basic(METRICS), auth(VIEWER), auth(ADMIN)):
            reply = client.get("/metrics", headers=headers)
            assert reply.status_code == 200 and "vmhealth_webhook_notifications_total" in reply.get_data(True)
        for path in HISTORY:
            assert client.get(path, headers=auth(METRICS)).status_code == 401, "Prometheus' token reads no history"
    finally:
        app.extensions["vmhealth"].close()


def test_the_exporter_reads_need_the_read_token_once_set(tmp_path: Path) -> None:
    app = exporter_app(tmp_path, read_token=READ)
    try:
        client = app.test_client()
        ingest = client.post("/api/health/report", json=report(100), headers={"X-API-Key": API_KEY})
        assert ingest.status_code == 200, "heartbeats keep their agent keys"
        for path in EXPORTER_READS:
            for headers in ({}, auth(READ + "x"), auth(API_KEY), {"X-API-Key": API_KEY}, basic(READ[:-1]),
                            {"Authorization": "Basic !!!"}, {"Authorization": "Basic \u00e9t\u00e9"}):
                reply = client.get(path, headers=headers)
                assert reply.status_code == 401, (path, headers)
                assert READ not in reply.get_data(True) and "web-server-01" not in reply.get_data(True)
            for headers in (auth(READ), basic(READ), basic(READ, user="")):
                assert client.get(path, headers=headers).status_code == 200, (path, headers)
        assert client.get("/api/vms/100", headers=auth(READ)).json["hostname"] == "web-server-01"
    finally:
        app.extensions["vmhealth"].archive.close()


@pytest.mark.parametrize("listen, read_token, warned", [
    ("0.0.0.0:9747", None, True), ("192.0.2.1:9747", None, True), ("0.0.0.0:9747", READ, False),
    ("127.0.0.1:9747", None, False), ("[::1]:9747", None, False), ("localhost:9747", None, False)])
def test_an_exporter_beyond_loopback_without_a_read_token_says_so_in_one_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, listen: str, read_token: str | None, warned: bool) -> None:
    with caplog.at_level(logging.WARNING, logger="vmhealth.exporter.service"):
        app = exporter_app(tmp_path, listen=listen, read_token=read_token)
    app.extensions["vmhealth"].archive.close()
    lines = [r.getMessage() for r in caplog.records if "beyond loopback" in r.getMessage()]
    assert len(lines) == (1 if warned else 0)
    assert all("\n" not in line and "exporter.read_token" in line for line in lines)


def test_the_probes_stay_open_and_name_nothing(tmp_path: Path) -> None:
    app = exporter_app(tmp_path, read_token=READ)
    try:
        client = app.test_client()
        for path in ("/healthz", "/readyz"):
            reply = client.get(path)
            assert reply.status_code in (200, 503) and set(reply.json) == {"status"}, (path, reply.json)
    finally:
        app.extensions["vmhealth"].archive.close()


@pytest.mark.binaries
@pytest.mark.slow
def test_the_real_prometheus_scrapes_with_the_tokens_and_nobody_else_reads(tmp_path: Path) -> None:
    """The stack with exporter.read_token and webhook.metrics_token set: the real Prometheus sends them
    (`authorization: credentials_file`) and both jobs are up; a request without them is refused."""
    import requests

    from vmhealth.stack.processes import wait_for
    from vmhealth.stack.running import StackSettings, running_stack

    with running_stack(StackSettings(nodes=1, guests=3, read_tokens=True), tmp_path) as stack:
        def up() -> dict[str, str]:
            return {r["metric"]["job"]: r["value"][1] for r in stack.query('up{job=~"vmhealth-.*"}')}

        wait_for(lambda: up() == {"vmhealth-exporter": "1", "vmhealth-webhook": "1"}, 60,
                 "both vmhealth jobs scraped with their tokens")
        for component, path in (("exporter", "/metrics"), ("exporter", "/api/vms"), ("webhook", "/metrics")):
            url = stack.urls[component] + path
            assert requests.get(url, timeout=10).status_code == 401, url
            assert requests.get(url, timeout=10, headers=stack.read_headers(component)).status_code == 200, url
        assert stack.query("vmhealth_heartbeat_timestamp_seconds"), "the exporter's series reached Prometheus"
