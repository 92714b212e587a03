"""Pull mode: `/metrics` over http.server, collected fresh on each scrape as node_exporter does."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from vmhealth.agent.exposition import CONTENT_TYPE

log = logging.getLogger("vmhealth.agent.server")

_LANDING = (b"<html><head><title>vmhealth agent</title></head><body><h1>vmhealth agent</h1>"
            b'<p><a href="/metrics">Metrics</a></p></body></html>\n')


class MetricsServer(ThreadingHTTPServer):
    """Serves `page()` at /metrics; one scrape at a time collects (a lock), so scrapes cannot pile up."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, page: Callable[[], str]) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.page = page
        self.lock = threading.Lock()
        super().__init__((host, port), _Handler)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="metrics", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    server_version = "vmhealth-agent"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                with self.server.lock:
                    body = self.server.page().encode("utf-8")
            except Exception:
                log.exception("collecting for /metrics failed")
                self._reply(500, b"collection failed; see the agent's log\n", "text/plain; charset=utf-8")
                return
            self._reply(200, body, CONTENT_TYPE)
        elif path == "/":
            self._reply(200, _LANDING, "text/html; charset=utf-8")
        else:
            self._reply(404, b"not found; metrics are at /metrics\n", "text/plain; charset=utf-8")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)
