"""A small stand-in exporter on loopback for the agent's push tests: records reports, answers as told."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeExporter(ThreadingHTTPServer):
    """Records each report; answers with `status` and `reply` (the real exporter's reply shapes)."""

    daemon_threads = True

    def __init__(self, port: int = 0, api_key: str = "good-key") -> None:
        self.api_key = api_key
        self.reports: list[dict[str, Any]] = []
        self.received: list[float] = []  # when each of `reports` arrived
        self.headers_seen: list[dict[str, str]] = []
        self.status: int | None = None  # None: answer as the real exporter would for the key
        self.reply: dict[str, Any] = {}
        super().__init__(("127.0.0.1", port), _FakeHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _FakeHandler(BaseHTTPRequestHandler):
    server: FakeExporter

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.headers_seen.append(dict(self.headers))
        status = self.server.status
        reply: dict[str, Any] = self.server.reply
        if status is None:
            if self.path != "/api/health/report":
                status, reply = 404, {"success": False, "error": "no such path"}
            elif self.headers.get("X-API-Key") != self.server.api_key:
                status, reply = 401, {"success": False, "error": "missing or wrong API key"}
            else:
                report = json.loads(body)
                self.server.reports.append(report)
                self.server.received.append(time.time())
                status, reply = 200, {"success": True, "message": f"Health report received for {report['hostname']}"}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass
