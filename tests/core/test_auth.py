"""Every write route of both apps refuses missing and wrong credentials, and records nothing; every
read route of every server needs its credential or is listed in docs/security.md as public.

The routes come from the apps' own URL maps, so a route added later is checked without anyone
remembering to list it here. The throttle of failed authentications is off: these tests fail on
purpose, many times (`test_auth_throttle.py` tests it). Cost: about 2 s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from tests.helpers.exporter import API_KEY, exporter_config, report
from tests.helpers.webhook import ADMIN, TOKEN, firing, make_config

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
WEBHOOK_TABLES = ("webhook_event", "webhook_incident", "webhook_quarantine", "webhook_action")


def write_routes(app: Any) -> list[tuple[str, str]]:
    """(method, concrete path) of every write route, its parameters filled with a guest id."""
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods & WRITES):
            out.append((method, re.sub(r"<[^>]+>", "100", rule.rule)))
    return out


def attempts(good: str, other: str) -> list[dict[str, str]]:
    """Header sets that must all be refused: none, wrong ones, and the app's other credential."""
    return [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {good}"},
            {"Authorization": f"Bearer {good}x"}, {"Authorization": f"Bearer {good[:-1]}"},
            {"Authorization": "Bearer "}, {"X-API-Key": good}, {"Authorization": f"Bearer {other}"}]


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Any]:
    from vmhealth.exporter.app import create_app

    app = create_app(exporter_config(tmp_path, auth_failures_per_minute=0), start=False)
    yield app
    app.extensions["vmhealth"].archive.close()


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[Any]:
    from vmhealth.webhook.app import create_app

    app = create_app(make_config(f"sqlite:///{tmp_path}/webhook.db", {"auth_failures_per_minute": 0}),
                     start_worker=False)
    yield app
    app.extensions["vmhealth"].close()


def test_every_exporter_write_route_refuses_missing_and_wrong_keys(exporter: Any) -> None:
    routes = write_routes(exporter)
    assert ("POST", "/api/health/report") in routes, "the enumeration must find the ingest route"
    store = exporter.extensions["vmhealth"].guests
    client = exporter.test_client()
    for method, path in routes:
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}, {"X-API-Key": API_KEY + "x"},
                        {"X-API-Key": API_KEY[:-1]}, {"X-API-Key": API_KEY.upper()},
                        {"Authorization": f"Bearer {API_KEY}"}):
            reply = client.open(path, method=method, json=report(100), headers=headers)
            assert reply.status_code == 401, (method, path, headers, reply.status_code)
            assert API_KEY not in reply.get_data(as_text=True)
    assert store.heartbeats == {} and exporter.extensions["vmhealth"].reports["unauthorized"] > 0
    good = client.post("/api/health/report", json=report(100), headers={"X-API-Key": API_KEY})
    assert good.status_code == 200, "the right key is accepted (the refusals above were about the key)"


def counts(app: Any) -> dict[str, int]:
    with app.extensions["vmhealth"].store.engine.connect() as connection:
        return {t: connection.execute(text(f"select count(*) from {t}")).scalar_one() for t in WEBHOOK_TABLES}


def test_every_webhook_write_route_refuses_missing_and_wrong_tokens(webhook: Any) -> None:
    routes = write_routes(webhook)
    expected = {("POST", "/alerts"), ("POST", "/api/vms/100/reset"), ("POST", "/api/vms/100/release")}
    assert expected <= set(routes), f"the enumeration must find the known routes, found {routes}"
    client = webhook.test_client()
    before = counts(webhook)
    for method, path in routes:
        good, other = (TOKEN, ADMIN) if path == "/alerts" else (ADMIN, TOKEN)
        body = firing(100) if path == "/alerts" else {"reason": "test"}
        for headers in attempts(good, other):
            reply = client.open(path, method=method, json=body, headers=headers)
            if path.startswith("/ui/"):  # the console's forms: a session and its CSRF token, never a bearer token
                assert reply.status_code in (400, 401), (method, path, headers, reply.status_code)
                continue
            assert reply.status_code == 401, (method, path, headers, reply.status_code)
            text_ = reply.get_data(as_text=True)
            assert TOKEN not in text_ and ADMIN not in text_
    assert counts(webhook) == before, "a refused request recorded something"
    reply = client.post("/alerts", json=firing(100), headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 200, "the right token is accepted (the refusals above were about the token)"


def test_an_unset_token_refuses_everyone(tmp_path: Path) -> None:
    """A webhook started without admin_token has no manual API at all, rather than an open one."""
    from vmhealth.webhook.app import create_app

    config = make_config(f"sqlite:///{tmp_path}/webhook.db")
    config = replace(config, webhook=replace(config.webhook, admin_token=None))
    app = create_app(config, start_worker=False)
    try:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
            reply = app.test_client().post("/api/vms/100/reset", json={}, headers=headers)
            assert reply.status_code == 401
    finally:
        app.extensions["vmhealth"].close()


SECURITY_DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
SECRET_NAMES = ("zeta-cluster", "web-server-01")  # what a public route must not tell: a cluster, a guest


def documented_public() -> set[tuple[str, str, str]]:
    """(component, METHOD, path) of every row of the "Deliberately public routes" table of docs/security.md."""
    section = SECURITY_DOC.read_text().split("### Deliberately public routes", 1)[1].split("\n#", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    rows = set()
    for line in table[2:]:
        component, route = (cell.strip().strip("`") for cell in line.strip("|").split("|")[:2])
        for one in route.split("`, `"):
            method, path = one.split(" ", 1)
            rows.add((component, method, path))
    return rows


def get_routes(app: Any) -> list[tuple[str, str]]:
    """(route as docs/security.md spells it, a concrete path) of every GET route of a Flask app: its
    parameters filled with a guest id, a static file's with the console's stylesheet."""
    out = set()
    for rule in app.url_map.iter_rules():
        if "GET" in rule.methods and rule.endpoint != "static":  # Flask's own, with no folder behind it
            concrete = re.sub(r"<[^>]+>", "100", rule.rule.replace("<path:filename>", "console.css"))
            out.add((re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"<\1>", rule.rule), concrete))
    return sorted(out)


def asks_for_a_login(reply: Any) -> bool:
    """The console's answer to a page without a session: to the login page."""
    return reply.status_code == 302 and urlsplit(reply.headers["Location"]).path == "/ui/login"


def test_every_route_of_every_component_is_authenticated_or_listed_public(tmp_path: Path) -> None:
    """Every read route of the exporter, the webhook and the agent's pull server, with every read
    credential configured: answered only with a credential, or listed in docs/security.md as public, and
    then telling no cluster or guest name. (The write routes are the tests above.)"""
    from vmhealth.agent.server import MetricsServer
    from vmhealth.exporter.app import create_app as exporter_app
    from vmhealth.webhook.app import create_app as webhook_app

    config = exporter_config(tmp_path, clusters=("zeta-cluster",), read_token="exporter-read-token-0123")
    exporter = exporter_app(config, start=False)
    webhook = webhook_app(make_config(f"sqlite:///{tmp_path}/webhook.db", {
        "viewer_token": "viewer-secret-token", "metrics_token": "metrics-secret-token"}), start_worker=False)
    agent = MetricsServer("127.0.0.1", 0, lambda: "")
    answered_without_credential: set[tuple[str, str, str]] = set()
    try:
        assert exporter.test_client().post("/api/health/report", json=report(100),
                                           headers={"X-API-Key": API_KEY}).status_code == 200
        for name, app in (("exporter", exporter), ("webhook", webhook)):
            client = app.test_client()
            routes = get_routes(app)
            assert {"/metrics", "/healthz"} <= {r for r, _ in routes}, f"the enumeration must find {name}'s"
            for route, path in routes:
                reply = client.get(path)
                if reply.status_code == 401 or asks_for_a_login(reply):
                    continue
                assert reply.status_code in (200, 503), (name, path, reply.status_code)
                body = reply.get_data(as_text=True)
                assert not [s for s in SECRET_NAMES if s in body], f"public {name} {path} tells {body[:200]}"
                answered_without_credential.add((name, "GET", route))
        answered_without_credential |= {("agent", "GET", path) for path in agent.pages}
    finally:
        agent.server_close()
        exporter.extensions["vmhealth"].archive.close()
        webhook.extensions["vmhealth"].close()
    assert answered_without_credential == documented_public()
