"""The console in a real browser: Debian's headless chromium against the real webhook process, with the
simulator, the exporter, the real Prometheus and Alertmanager behind it (one stack for the module).

Set VMHEALTH_SCREENSHOTS=<folder> to keep a screenshot of every page (docs/console.md uses them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers.browser import chromium_driver, color_scheme, phone
from tests.helpers.e2e import settings
from tests.helpers.requirements import binary
from vmhealth.db import make_engine
from vmhealth.stack.running import ADMIN_TOKEN, Stack, running_stack
from vmhealth.webhook.database import WebhookDatabase

ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}  # the JSON API takes no console cookie

pytestmark = [pytest.mark.binaries, pytest.mark.slow]

VIEWER_TOKEN = "console-viewer-token-0123"
HUNG, QUARANTINED, UNTOUCHED = 104, 107, 101


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary("prometheus"), binary("alertmanager")
    workdir: Path = tmp_path_factory.mktemp("console-stack")
    with running_stack(settings(webhook={"viewer_token": VIEWER_TOKEN}), workdir) as running:
        yield running


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("VMHEALTH_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("console-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def chrome() -> Iterator[Any]:
    driver = chromium_driver()
    try:
        yield driver
    finally:
        driver.quit()


def ui(stack: Stack, path: str) -> str:
    return f"{stack.urls['webhook']}/ui{path}"


def by_css(chrome: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return chrome.find_elements(By.CSS_SELECTOR, selector)


def text_of(chrome: Any, selector: str) -> str:
    found = by_css(chrome, selector)
    return found[0].text if found else ""


def wait_page(chrome: Any, url: str, check: Any, seconds: float, what: str) -> None:
    """Load `url` again until `check(chrome)` holds; fail after `seconds` naming `what`."""
    deadline = time.monotonic() + seconds
    while True:
        chrome.get(url)
        if check(chrome):
            return
        if time.monotonic() > deadline:
            page = chrome.find_element("tag name", "main").text[:2000]
            pytest.fail(f"after {seconds:.0f}s still waiting for {what}; page:\n{page}")
        time.sleep(2)


def replaced(chrome: Any, old: Any) -> None:
    """Wait until the document `old` belonged to is gone and the next one (after any redirect) has loaded.

    A node of a document being replaced answers chromedriver with StaleElementReference or, mid-way,
    with "Node with given id does not belong to the document": either means it is gone."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def gone(_: Any) -> bool:
        try:
            old.is_enabled()
        except WebDriverException:
            return True
        return False

    WebDriverWait(chrome, 20).until(gone)
    WebDriverWait(chrome, 20, ignored_exceptions=(WebDriverException,)).until(
        lambda c: c.execute_script("return document.readyState") == "complete")


def submit(chrome: Any, selector: str) -> None:
    """Click a button that submits its form, and wait for the next page."""
    old = chrome.find_element("tag name", "html")
    by_css(chrome, selector)[0].click()
    replaced(chrome, old)


def log_in(chrome: Any, stack: Stack, token: str, who: str = "") -> None:
    chrome.get(ui(stack, "/login"))
    by_css(chrome, "#token")[0].send_keys(token)
    if who:
        by_css(chrome, "#who-input")[0].send_keys(who)
    submit(chrome, "#login")


def confirm(chrome: Any) -> str:
    """Press "Yes" on the confirmation page; the summary it showed."""
    summary = text_of(chrome, "#summary")
    assert summary, f"expected a confirmation page, got:\n{chrome.page_source[:1500]}"
    submit(chrome, "#confirm")
    return summary


def post_form(chrome: Any, action: str, fields: dict[str, str]) -> None:
    """Submit a form the page does not offer (what a forged or replayed request would do)."""
    old = chrome.find_element("tag name", "html")
    chrome.execute_script("""
        const form = document.createElement('form'); form.method = 'post'; form.action = arguments[0];
        for (const [name, value] of Object.entries(arguments[1])) {
            const input = document.createElement('input'); input.type = 'hidden'; input.name = name;
            input.value = value; form.appendChild(input);
        }
        document.body.appendChild(form); form.submit();""", action, fields)
    replaced(chrome, old)


def test_a_wrong_token_is_refused_after_a_delay_and_the_right_one_logs_in(stack: Stack, chrome: Any,
                                                                         shots: Path) -> None:
    started = time.monotonic()
    log_in(chrome, stack, "not-the-right-token-at-all")
    assert time.monotonic() - started >= 1.0
    assert "neither the admin token nor the viewer token" in text_of(chrome, "#login-error")
    assert "Traceback" not in chrome.page_source
    chrome.save_screenshot(str(shots / "console-login.png"))
    chrome.get(ui(stack, "/history"))  # not logged in: to the login page, and back after it
    assert "/ui/login" in chrome.current_url
    by_css(chrome, "#token")[0].send_keys(ADMIN_TOKEN)
    by_css(chrome, "#who-input")[0].send_keys("ann")
    submit(chrome, "#login")
    assert chrome.current_url.endswith("/ui/history") and text_of(chrome, "#who") == "ann (admin)"
    cookie = chrome.get_cookie("vmhealth_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and "expiry" in cookie
    submit(chrome, "header .who button")  # log out
    assert "/ui/login" in chrome.current_url and "logged out" in chrome.page_source
    chrome.get(ui(stack, "/"))
    assert "/ui/login" in chrome.current_url


def test_paused_alerts_are_refused_and_a_reset_from_the_console_acts_once(stack: Stack, chrome: Any,
                                                                         shots: Path) -> None:
    log_in(chrome, stack, ADMIN_TOKEN, "ann")
    by_css(chrome, "#pause-reason")[0].send_keys("storage maintenance")
    submit(chrome, "#pause")
    assert "refused as skipped:remediation-paused" in confirm(chrome)
    assert "paused" in text_of(chrome, ".flash.ok")
    assert "storage maintenance" in text_of(chrome, ".pause-banner")
    try:
        stack.sim.hang(HUNG)
        wait_page(chrome, ui(stack, "/"), lambda c: by_css(c, f'#guests tr[data-vmid="{HUNG}"][data-state="hung"]'),
                  150, f"guest {HUNG} to show as hung")
        chrome.save_screenshot(str(shots / "console-now.png"))
        wait_page(chrome, ui(stack, f"/history?vmid={HUNG}"),
                  lambda c: by_css(c, 'tr[data-outcome="skipped:remediation-paused"]'), 60,
                  "the alert to be refused as paused")
        assert "paused by manual:ann" in text_of(chrome, 'tr[data-outcome="skipped:remediation-paused"]')
        chrome.save_screenshot(str(shots / "console-history.png"))
        assert stack.sim.resets(HUNG) == []

        chrome.get(ui(stack, f"/guests/sim/{HUNG}"))
        assert text_of(chrome, "#guest-state") == "hung"
        assert len(by_css(chrome, ".chart path")) == 4
        chrome.save_screenshot(str(shots / "console-guest.png"))
        by_css(chrome, "#reset-reason")[0].send_keys("frozen since the storage work")
        submit(chrome, "#reset")
        chrome.save_screenshot(str(shots / "console-confirm.png"))
        assert f"Reset guest {HUNG} of cluster sim" in confirm(chrome)
        assert "Reset command sent" in text_of(chrome, ".flash.ok")
        row = by_css(chrome, '#guest-history tr[data-outcome="success"]')
        assert row and "manual:ann" in row[0].text and "frozen since the storage work" in row[0].text
        assert len(stack.sim.resets(HUNG)) == 1
    finally:
        stack.sim.heal()
        chrome.get(ui(stack, "/"))
        if by_css(chrome, "button.resume"):
            submit(chrome, "button.resume")
            confirm(chrome)
    assert "resumed" in text_of(chrome, ".flash.ok") and not by_css(chrome, ".pause-banner")
    rows = stack.resets()
    assert [(r["outcome"], r["actor"]) for r in rows if r["outcome"] in ("paused", "resumed")][:2] == [
        ("resumed", "manual:ann"), ("paused", "manual:ann")]


def test_a_quarantine_is_released_from_the_now_page(stack: Stack, chrome: Any) -> None:
    store = WebhookDatabase(make_engine(f"sqlite:///{stack.workdir / 'webhook.db'}"))
    store.incidents.quarantine("sim", QUARANTINED, None, 3, "three resets did not help", time.time())
    store.engine.dispose()
    log_in(chrome, stack, ADMIN_TOKEN, "ann")
    row = f'#quarantines tr[data-vmid="{QUARANTINED}"]'
    assert "three resets did not help" in text_of(chrome, row)
    submit(chrome, f"{row} button.release")
    assert f"Release guest {QUARANTINED}" in confirm(chrome)
    assert f"Released sim/{QUARANTINED}" in text_of(chrome, ".flash.ok") and not by_css(chrome, row)
    [released] = [r for r in stack.resets(QUARANTINED) if r["outcome"] == "released"]
    assert released["actor"] == "manual:ann"


def test_a_viewer_sees_everything_and_can_change_nothing(stack: Stack, chrome: Any) -> None:
    log_in(chrome, stack, VIEWER_TOKEN, "val")
    assert text_of(chrome, "#who") == "val (viewer)" and by_css(chrome, "#brakes")
    assert not by_css(chrome, "#pause-form")
    chrome.get(ui(stack, f"/guests/sim/{UNTOUCHED}"))
    assert by_css(chrome, "#guest-history") and not by_css(chrome, "#reset-form")
    csrf = by_css(chrome, 'header input[name="csrf"]')[0].get_attribute("value")
    post_form(chrome, ui(stack, f"/guests/sim/{UNTOUCHED}/reset"), {"csrf": csrf, "confirmed": "1", "reason": "x"})
    assert "viewer token" in text_of(chrome, "#message")
    post_form(chrome, ui(stack, "/pause"), {"csrf": csrf, "confirmed": "1", "reason": "x", "scope": "*"})
    assert "viewer token" in text_of(chrome, "#message")
    assert stack.sim.resets(UNTOUCHED) == []
    assert requests.get(f"{stack.urls['webhook']}/api/remediation", timeout=10, headers=ADMIN_HEADERS).json()[
        "paused"] == []
    # the console's cookie opens nothing outside /ui/
    session = requests.Session()
    session.cookies.set("vmhealth_console", chrome.get_cookie("vmhealth_console")["value"])
    assert session.post(f"{stack.urls['webhook']}/api/vms/{UNTOUCHED}/reset", json={}, timeout=10).status_code == 401


def test_a_post_without_its_csrf_token_is_refused(stack: Stack, chrome: Any) -> None:
    log_in(chrome, stack, ADMIN_TOKEN, "ann")
    chrome.get(ui(stack, f"/guests/sim/{UNTOUCHED}"))
    submit(chrome, "#reset")
    chrome.execute_script("document.querySelector('#confirm').form.querySelector('[name=csrf]').remove()")
    submit(chrome, "#confirm")
    assert "CSRF token is missing or wrong" in text_of(chrome, "#message")
    assert stack.sim.resets(UNTOUCHED) == []
    assert not [r for r in stack.resets(UNTOUCHED) if r["actor"].startswith("manual:")]


def _forged_session(age: float) -> str:
    """A session cookie as the webhook would sign it, logged in `age` seconds ago."""
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface

    from vmhealth.webhook.console_session import signing_key, token_tag

    app = Flask("forge")
    app.secret_key = signing_key(ADMIN_TOKEN)
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    return serializer.dumps({"role": "admin", "who": "ann", "tag": token_tag(app.secret_key, ADMIN_TOKEN),
                             "at": time.time() - age, "csrf": "c" * 32, "_permanent": True})


def test_an_expired_session_is_refused(stack: Stack, chrome: Any) -> None:
    chrome.get(ui(stack, "/login"))
    chrome.add_cookie({"name": "vmhealth_console", "value": _forged_session(60), "path": "/"})
    chrome.get(ui(stack, "/"))
    assert text_of(chrome, "#who") == "ann (admin)"  # the forged cookie is one the webhook accepts
    chrome.delete_all_cookies()
    chrome.add_cookie({"name": "vmhealth_console", "value": _forged_session(13 * 3600), "path": "/"})
    chrome.get(ui(stack, "/"))
    assert "/ui/login" in chrome.current_url and "session has expired" in text_of(chrome, "#login-error")
    post_form(chrome, ui(stack, "/pause"), {"csrf": "c" * 32, "confirmed": "1", "reason": "x", "scope": "*"})
    assert "session has expired" in text_of(chrome, "#login-error")
    assert requests.get(f"{stack.urls['webhook']}/api/remediation", timeout=10, headers=ADMIN_HEADERS).json()[
        "paused"] == []


def test_pages_fit_a_phone_in_the_dark(stack: Stack, chrome: Any, shots: Path) -> None:
    log_in(chrome, stack, ADMIN_TOKEN, "ann")
    color_scheme(chrome, "dark")
    phone(chrome, True)
    for path, name in (("/", "console-now-phone-dark.png"), (f"/guests/sim/{HUNG}", None), ("/history", None)):
        chrome.get(ui(stack, path))
        width = chrome.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1] + 1, f"{path} is wider than the phone: {width}"
        background = chrome.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(18, 20, 23)", background
        if name:
            chrome.save_screenshot(str(shots / name))
    color_scheme(chrome, "light")
    phone(chrome, False)
    chrome.get(ui(stack, "/"))
    assert chrome.execute_script("return getComputedStyle(document.body).backgroundColor") == "rgb(247, 247, 248)"


def test_the_original_metrics_endpoint_answers_its_shape_from_prometheus(stack: Stack) -> None:
    reply = requests.get(f"{stack.urls['webhook']}/api/vms/{UNTOUCHED}/metrics?hours=1",
                         headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}, timeout=30)
    assert reply.status_code == 200, reply.text
    points = reply.json()
    assert points and set(points[-1]) == {"timestamp", "cpuUsage", "ramUsage", "ramTotal", "uptime"}
    last = points[-1]
    assert 0 <= last["cpuUsage"] <= 100 and 0 < last["ramUsage"] <= last["ramTotal"] and last["uptime"] > 0
    assert [p["timestamp"] for p in points] == sorted(p["timestamp"] for p in points)
