"""A stand-in for the exporter's heartbeat route that records what arrives, for simulated agents."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """A stand-in for the exporter's POST /api/health/report that records what arrives."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    receiver.reports.append((time.time(), self.headers.get("X-API-Key", ""), body))
                reply = json.dumps({"success": True, "message": f"Health report received for {body['hostname']}"})
                self.send_response(200 if self.path == "/api/health/report" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply.encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def vmids(self, since: float = 0.0) -> set[int]:
        with self.lock:
            return {int(body["vmid"]) for at, _, body in self.reports if at >= since}

    def wait_for(self, condition: Any, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, "condition not met in time"
            time.sleep(0.05)
