"""The heartbeat fast path (`FastReports`) answers exactly as the Flask route behind it would."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest

from tests.helpers.exporter import API_KEY, exporter_config, report
from vmhealth.exporter.app import create_app
from vmhealth.exporter.ingest import FastReports
from vmhealth.exporter.poller import snapshot_from


@pytest.fixture
def app(tmp_path):
    app = create_app(exporter_config(tmp_path, max_body_bytes=4096), start=False)
    store = app.extensions["vmhealth"].guests
    store.apply_snapshot("lab", snapshot_from(
        [{"type": "qemu", "vmid": 100, "node": "pve1", "name": "vm100", "status": "running"}],
        [{"type": "node", "name": "pve1", "online": 1}], time.time()), 0.1)
    yield app
    app.extensions["vmhealth"].archive.close()


def call(wsgi: Any, body: bytes, content_type: str = "application/json", key: str | None = API_KEY,
         path: str = "/api/health/report") -> tuple[str, dict[str, str], bytes]:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "SCRIPT_NAME": "", "SERVER_NAME": "127.0.0.1",
               "SERVER_PORT": "9747", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(), "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": content_type}
    if key is not None:
        environ["HTTP_X_API_KEY"] = key
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        got["status"], got["headers"] = status, dict(headers)

    out = b"".join(wsgi(environ, start_response))
    return got["status"], got["headers"], out


CASES = [
    (json.dumps(report(100)).encode(), "application/json", API_KEY),
    (json.dumps(report(100, cpuUsage=300, ramUsage=-1)).encode(), "application/json", API_KEY),
    (b"{not json", "application/json", API_KEY),
    (json.dumps(report(100)).encode(), "application/json; charset=utf-8", "wrong-key"),
    (json.dumps(report(100)).encode(), "application/json", None),
    (json.dumps(report(100)).encode(), "text/plain", API_KEY),
    (json.dumps(report(4242)).encode(), "application/json", API_KEY),
]


@pytest.mark.parametrize(("body", "content_type", "key"), CASES)
def test_same_reply_as_the_flask_route(app, body, content_type, key):
    fast = app.wsgi_app
    assert isinstance(fast, FastReports)
    slow = call(fast.app, body, content_type, key)
    quick = call(fast, body, content_type, key)
    assert quick[0] == slow[0]
    assert quick[2] == slow[2]
    assert quick[1]["Content-Type"] == slow[1]["Content-Type"] == "application/json"
    assert int(quick[1]["Content-Length"]) == len(quick[2])


def test_counts_like_the_flask_route(app):
    exporter = app.extensions["vmhealth"]
    call(app.wsgi_app, json.dumps(report(100)).encode())
    call(app.wsgi_app, b"[]")
    assert exporter.reports["accepted"] == 1 and exporter.reports["invalid"] == 1


def test_too_large_and_other_paths_go_to_flask(app):
    status, _, body = call(app.wsgi_app, b"{" + b" " * 5000 + b"}")
    assert status.startswith("413") and b"max_body_bytes" in body
    assert app.extensions["vmhealth"].reports["too_large"] == 1
    status, _, _ = call(app.wsgi_app, b"{}", path="/api/health/other")
    assert status.startswith("404")


def test_a_failing_handler_answers_500_in_json(app, caplog):
    def broken(*_: Any) -> tuple[int, dict[str, Any]]:
        raise RuntimeError("boom")

    fast = FastReports(app.wsgi_app.app, broken, 4096, json.dumps)
    status, _, body = call(fast, b"{}")
    assert status == "500 INTERNAL SERVER ERROR"
    assert json.loads(body) == {"success": False, "error": "internal error"}
    assert "heartbeat report failed" in caplog.text
