"""The console inside one app (Flask's test client): login, sessions, CSRF, roles, proxies, escaping.

The browser tests (test_console_browser.py) drive the same pages in chromium against a real stack;
these cover the edges a browser test would be slow to reach.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.console import csrf, log_in
from tests.helpers.webhook import ADMIN, make_config
from tests.helpers.webhook import auth as bearer
from vmhealth.webhook import create_app
from vmhealth.webhook.sparkline import HEIGHT, sparkline

VIEWER = "viewer-secret-token-1"


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    apps: list[Any] = []

    def build(**webhook: Any) -> Any:
        app = create_app(make_config(f"sqlite:///{tmp_path}/webhook.db", webhook={"viewer_token": VIEWER, **webhook}),
                         start_worker=False)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["vmhealth"].close()






def test_a_wrong_token_waits_is_counted_and_says_what_was_wrong(make: Any) -> None:
    app = make()
    client = app.test_client()
    started = time.monotonic()
    reply = log_in(client, "not-a-token-we-know")
    assert time.monotonic() - started >= 1.0
    assert reply.status_code == 401 and "neither the admin token nor the viewer token" in reply.text
    metrics = client.get("/metrics").text
    assert re.search(r'vmhealth_http_auth_failures_total\{reason="wrong",route="POST /ui/login"\} [1-9]', metrics)
    assert client.get("/ui/").status_code == 302


def test_login_returns_only_to_a_console_page(make: Any) -> None:
    client = make().test_client()
    assert log_in(client, ADMIN, next_page="/ui/history").headers["Location"] == "/ui/history"
    for hostile in ("//evil.example/ui/", "https://evil.example/", "/ui/..\\\\evil", "/metrics"):
        client = make().test_client()
        assert log_in(client, ADMIN, next_page=hostile).headers["Location"] == "/ui/", hostile


def test_a_name_that_is_not_a_plain_name_is_refused(make: Any) -> None:
    reply = log_in(make().test_client(), ADMIN, who="<b>ann</b>")
    assert reply.status_code == 400 and "Your name" in reply.text


def test_a_viewer_is_refused_every_action_and_the_api_ignores_the_cookie(make: Any) -> None:
    client = make().test_client()
    log_in(client, VIEWER, "val")
    token = csrf(client.get("/ui/").text)
    for path, form in (("/ui/pause", {"scope": "*", "reason": "r"}), ("/ui/resume", {"scope": "*"}),
                       ("/ui/guests/lab/100/reset", {}), ("/ui/guests/lab/100/release", {})):
        reply = client.post(path, data={"csrf": token, "confirmed": "1", **form})
        assert reply.status_code == 403 and "viewer token" in reply.text, path
    assert client.post("/api/remediation/pause", json={"reason": "r"}).status_code == 401
    assert client.get("/api/remediation", headers=bearer(ADMIN)).get_json()["paused"] == []


def test_csrf_is_required_on_every_action_and_on_the_login(make: Any) -> None:
    client = make().test_client()
    log_in(client, ADMIN)
    reply = client.post("/ui/pause", data={"scope": "*", "reason": "r", "confirmed": "1"})
    assert reply.status_code == 400 and "CSRF" in reply.text
    reply = client.post("/ui/pause", data={"csrf": "guessed", "scope": "*", "reason": "r", "confirmed": "1"})
    assert reply.status_code == 400
    assert client.get("/api/remediation", headers=bearer(ADMIN)).get_json()["paused"] == []
    fresh = make().test_client()
    reply = fresh.post("/ui/login", data={"token": ADMIN})
    assert reply.status_code == 400 and "expired" in reply.text


def test_a_replaced_token_ends_its_sessions(make: Any) -> None:
    first = make().test_client()
    log_in(first, VIEWER)
    cookie = first.get_cookie("vmhealth_console").value
    assert first.get("/ui/").status_code == 200
    replaced = make(viewer_token="another-viewer-token-2").test_client()
    replaced.set_cookie("vmhealth_console", cookie)
    reply = replaced.get("/ui/")
    assert reply.status_code == 302 and "expired=1" in reply.headers["Location"]
    rotated_admin = make(admin_token="another-admin-token-3").test_client()
    rotated_admin.set_cookie("vmhealth_console", cookie)
    assert rotated_admin.get("/ui/").status_code == 302


def test_behind_a_proxy_under_a_prefix_links_carry_the_prefix_and_the_cookie_is_secure(make: Any) -> None:
    proxied = {"X-Forwarded-Prefix": "/vmhealth", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "ops.example"}
    client = make(proxy_hops=1).test_client()
    page = client.get("/ui/login", headers=proxied).text
    assert 'action="/vmhealth/ui/login"' in page and "/vmhealth/ui/static/console.css" in page
    reply = log_in(client, ADMIN, **proxied)
    assert reply.headers["Location"] == "/vmhealth/ui/"
    assert "Secure" in reply.headers["Set-Cookie"] and "SameSite=Strict" in reply.headers["Set-Cookie"]
    direct = make().test_client()  # no proxy configured: the headers are anyone's, and ignored
    page = direct.get("/ui/login", headers=proxied).text
    assert 'action="/ui/login"' in page
    assert "Secure" not in log_in(direct, ADMIN, **proxied).headers["Set-Cookie"]


def test_pages_escape_what_people_and_alerts_wrote_and_say_what_they_lack(make: Any) -> None:
    client = make().test_client()
    log_in(client, ADMIN, "ann")
    token = csrf(client.get("/ui/").text)
    client.post("/ui/pause", data={"csrf": token, "scope": "*", "reason": "<script>x()</script>", "confirmed": "1"})
    for path in ("/ui/", "/ui/history", "/ui/guests/lab/100"):
        page = client.get(path).text
        assert "<script>x()" not in page and "&lt;script&gt;x()" in page, path
        assert "webhook.prometheus_url" in page or path == "/ui/history"
    reply = client.get("/ui/history?vmid=abc")
    assert reply.status_code == 400 and "vmid" in reply.text
    reply = client.get("/ui/guests/nowhere/100")
    assert reply.status_code == 404 and "not configured" in reply.text and "<html" in reply.text
    assert "default-src 'self'" in client.get("/ui/").headers["Content-Security-Policy"]


def test_the_original_metrics_endpoint_needs_a_reader_and_prometheus(make: Any) -> None:
    client = make().test_client()
    assert client.get("/api/vms/100/metrics").status_code == 401
    reply = client.get("/api/vms/100/metrics", headers={"Authorization": f"Bearer {VIEWER}"})
    assert reply.status_code == 503 and "prometheus_url" in reply.get_json()["error"]
    configured = make(prometheus_url="http://127.0.0.1:9").test_client()
    for hours in ("0", "-1", "nan", "1e9", "x"):
        reply = configured.get(f"/api/vms/100/metrics?hours={hours}", headers={"Authorization": f"Bearer {ADMIN}"})
        assert reply.status_code == 400 and "hours" in reply.get_json()["error"], hours
    reply = configured.get("/api/vms/100/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert reply.status_code == 502 and "Prometheus did not answer" in reply.get_json()["error"]


def test_a_sparkline_scales_into_its_box_and_breaks_at_gaps() -> None:
    line = sparkline([(0, 0.0), (10, 5.0), (20, 10.0), (100, 10.0)], 0, 100, gap=15)
    assert line.path.split(" L")[0] == f"M0.0 {HEIGHT:.1f}" and line.high == 10 and line.last == 10
    assert line.path.count("M") == 2  # the 80 s without samples is a gap, not a line
    assert sparkline([], 0, 100, 15).path == ""


def test_over_tls_the_cookie_is_secure(make: Any) -> None:
    client = make().test_client()
    page = client.get("/ui/login", base_url="https://localhost").text
    reply = client.post("/ui/login", base_url="https://localhost",
                        data={"csrf": csrf(page), "token": ADMIN, "who": "", "next": ""})
    assert reply.status_code == 302 and "; Secure" in reply.headers["Set-Cookie"]
