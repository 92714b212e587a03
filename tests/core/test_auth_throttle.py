"""vmhealth.auth_throttle: failures from one address are delayed, then refused with 429; they leak away
over time; many addresses cannot grow its memory; a server with it on never delays the right token."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.exporter import exporter_config
from tests.helpers.webhook import ADMIN, TOKEN, auth, firing, make_config
from vmhealth.auth_throttle import AuthThrottle, Penalty, for_limit, penalize
from vmhealth.httpauth import THROTTLE_EXTENSION
from vmhealth.process_counters import AUTH_THROTTLED


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_free_failures_then_growing_delays_then_429_until_it_leaks_away() -> None:
    clock = Clock()
    throttle = AuthThrottle(free_failures=2, refuse_after=6, refill_per_second=1.0, base_delay=0.1, max_delay=0.3,
                            clock=clock)
    penalties = [throttle.failure("10.0.0.1") for _ in range(8)]
    assert [p.delay for p in penalties[:6]] == [0, 0, 0.1, 0.2, 0.3, 0.3]
    assert penalties[6] == Penalty(retry_after=1) and penalties[7] == Penalty(retry_after=1)
    assert throttle.failure("10.0.0.2") == Penalty(), "another address is not affected"
    clock.now += 1.0  # one failure leaked away: below the refusal again, and delayed
    assert throttle.failure("10.0.0.1").delay == 0.3
    clock.now += 60
    assert throttle.failures("10.0.0.1") == 0 and throttle.failure("10.0.0.1") == Penalty()


def test_many_addresses_keep_its_memory_bounded_and_the_latest_are_remembered() -> None:
    throttle = AuthThrottle(free_failures=1, refuse_after=3, max_addresses=100, clock=Clock())
    for i in range(10_000):
        throttle.failure(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(throttle) == 100
    for _ in range(3):
        throttle.failure("192.0.2.1")
    assert throttle.failure("192.0.2.1").retry_after, "an address still failing is refused"


def test_for_limit_and_penalize_count_and_sleep() -> None:
    assert for_limit(0) is None and penalize(None, "GET /x", "10.0.0.9") is None
    throttle = for_limit(8)
    assert throttle is not None and (throttle.free, throttle.refuse_after) == (2, 8)
    throttle.clock = Clock()  # nothing leaks away during the test
    slept: list[float] = []
    before = AUTH_THROTTLED.snapshot()
    answers = [penalize(throttle, "GET /test-throttle", "10.0.0.9", sleep=slept.append) for _ in range(9)]
    assert answers[:8] == [None] * 8 and answers[8] and answers[8] >= 1
    assert slept == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    after = AUTH_THROTTLED.snapshot()
    assert after.get(("GET /test-throttle", "delayed"), 0) - before.get(("GET /test-throttle", "delayed"), 0) == 6
    assert after.get(("GET /test-throttle", "refused"), 0) - before.get(("GET /test-throttle", "refused"), 0) == 1


def fast(app: Any) -> None:
    """A throttle that refuses after 4 failures with delays of milliseconds, so the test is quick (and a
    clock that stands still, so that nothing leaks away during it)."""
    app.extensions[THROTTLE_EXTENSION] = AuthThrottle(free_failures=1, refuse_after=4, base_delay=0.01,
                                                      max_delay=0.02, clock=Clock())


@pytest.fixture
def webhook(tmp_path: Path) -> Any:
    from vmhealth.webhook.app import create_app

    app = create_app(make_config(f"sqlite:///{tmp_path}/webhook.db", {"viewer_token": "viewer-secret-token"}),
                     start_worker=False)
    fast(app)
    yield app
    app.extensions["vmhealth"].close()


@pytest.mark.parametrize("path, right", [("/api/resets", "viewer-secret-token"), ("/api/resets", ADMIN),
                                         ("/api/vms/100/reset-history", "viewer-secret-token")])
def test_a_guessing_address_gets_429_and_the_right_token_from_it_still_reads(webhook: Any, path: str,
                                                                              right: str) -> None:
    client = webhook.test_client()
    codes = [client.get(path, headers=auth("guess-" + str(i))).status_code for i in range(6)]
    assert codes == [401] * 4 + [429] * 2
    refused = client.get(path, headers=auth("guess"))
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    started = time.monotonic()
    assert client.get(path, headers=auth(right)).status_code == 200, "the right token is never refused"
    assert time.monotonic() - started < 0.5, "nor delayed"
    page = client.get("/metrics").get_data(as_text=True)
    route = "GET /api/resets" if path == "/api/resets" else "GET /api/vms/<vmid>/reset-history"
    assert f'vmhealth_http_auth_throttled_total{{result="refused",route="{route}"}}' in page
    assert f'vmhealth_http_auth_failures_total{{reason="wrong",route="{route}"}}' in page


def test_the_admin_routes_are_throttled_and_alertmanager_never_gets_429(webhook: Any) -> None:
    client = webhook.test_client()
    codes = [client.post("/api/vms/100/release", json={}, headers=auth("guess")).status_code for _ in range(6)]
    assert codes[-1] == 429
    assert client.post("/api/vms/100/release", json={}, headers=auth(ADMIN)).status_code == 404  # not quarantined
    alerts = [client.post("/alerts", json=firing(100), headers=auth("guess")).status_code for _ in range(10)]
    assert alerts == [401] * 10, "Alertmanager does not retry a 429: /alerts only counts"
    assert client.post("/alerts", json=firing(100), headers=auth(TOKEN)).status_code == 200


def test_the_exporter_read_api_is_throttled_and_the_read_token_passes(tmp_path: Path) -> None:
    from vmhealth.exporter.app import create_app

    config = exporter_config(tmp_path)
    config = replace(config, exporter=replace(config.exporter, read_token="exporter-read-token-0123"))
    app = create_app(config, start=False)
    fast(app)
    try:
        client = app.test_client()
        codes = [client.get("/api/vms", headers=auth("guess")).status_code for _ in range(6)]
        assert codes == [401] * 4 + [429] * 2
        assert client.get("/metrics", headers=auth("exporter-read-token-0123")).status_code == 200
        page = client.get("/metrics", headers=auth("exporter-read-token-0123")).get_data(as_text=True)
        assert 'vmhealth_http_auth_throttled_total{route="GET /api/vms",result="refused"} 2' in page
    finally:
        app.extensions["vmhealth"].archive.close()


def test_a_guessing_address_gets_429_at_the_console_login_and_the_right_token_still_logs_in(
        webhook: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers.console import log_in
    from vmhealth.webhook import console_session

    monkeypatch.setattr(console_session, "FAILED_LOGIN_DELAY", 0.0)  # the console's own wait, tested there
    codes = [log_in(webhook.test_client(), f"guess-{i}").status_code for i in range(6)]
    assert codes == [401] * 4 + [429] * 2
    refused = log_in(webhook.test_client(), "guess")
    assert refused.status_code == 429 and "Too many failed logins" in refused.text and refused.headers["Retry-After"]
    started = time.monotonic()
    reply = log_in(webhook.test_client(), "viewer-secret-token")
    assert reply.status_code == 302 and reply.headers["Location"].endswith("/ui/"), "the right token logs in"
    assert time.monotonic() - started < 0.5
    page = webhook.test_client().get("/metrics").get_data(as_text=True)
    assert 'vmhealth_http_auth_throttled_total{result="refused",route="POST /ui/login"}' in page
