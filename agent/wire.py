"""The little HTTP the agent speaks: one POST as a client, GET /metrics as a server.

The standard library's http.client, urllib.request and http.server load the email package and
ssl whether or not they are used, about 6 MiB of resident memory in every guest. The agent needs one
request shape each way, so it speaks HTTP/1.1 over a socket itself and loads ssl only for an
https:// exporter.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("vmhealth.agent.wire")

MAX_REPLY = 65536
MAX_HEADER_LINES = 100
MAX_LINE = 8192


class HttpError(OSError):
    """A reply that is not HTTP."""


def post(url: str, body: bytes, headers: dict[str, str], timeout: float,
         context: Any = None) -> tuple[int, bytes]:
    """POST `body` to `url`; (status, first MAX_REPLY bytes of the reply body). OSError on failure."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    port = parts.port or (443 if https else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sock = socket.create_connection((parts.hostname, port), timeout=timeout)
    try:
        if https:
            sock = context.wrap_socket(sock, server_hostname=parts.hostname)
        head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}",
                f"Content-Length: {len(body)}", "Connection: close"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        with sock.makefile("rb") as reply:
            return _read_reply(reply)
    finally:
        sock.close()


def _read_reply(reply: Any) -> tuple[int, bytes]:
    status_line = reply.readline(MAX_LINE).decode("latin-1")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        raise HttpError(f"not an HTTP reply: {status_line.strip()[:80]!r}")
    status = int(fields[1])
    length, chunked = None, False
    for _ in range(MAX_HEADER_LINES):
        line = reply.readline(MAX_LINE).decode("latin-1").strip()
        if not line:
            break
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length" and value.strip().isdigit():
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        data = b""
        while len(data) < MAX_REPLY:
            size = int(reply.readline(MAX_LINE).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                break
            data += reply.read(size)
            reply.readline(MAX_LINE)
        return status, data[:MAX_REPLY]
    return status, reply.read(min(length, MAX_REPLY) if length is not None else MAX_REPLY)


Page = Callable[[], tuple[int, str, bytes]]  # () -> (status, content type, body)


class PageServer(socketserver.ThreadingTCPServer):
    """Serves GET/HEAD of a few fixed paths; each connection answers one request and closes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, pages: dict[str, Page], tls: Any = None) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.pages = pages
        self.tls = tls  # a vmhealth.tls.ReloadingContext: HTTPS, the handshake in the connection's thread
        super().__init__((host, port), _PageHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            return super().finish_request(request, client_address)
        from vmhealth.tls import handshake_failure

        request.settimeout(_PageHandler.timeout)
        try:
            request = self.tls.context().wrap_socket(request, server_side=True)
        except OSError as exc:
            log.warning("refused a TLS handshake from %s: %s", client_address[0], handshake_failure(exc))
            return None
        try:
            return super().finish_request(request, client_address)
        finally:
            request.close()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="metrics", daemon=True)
        thread.start()
        return thread


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}


class _PageHandler(socketserver.StreamRequestHandler):
    server: PageServer
    timeout = 10  # a client that connects and says nothing does not hold a thread for long

    def handle(self) -> None:
        try:
            request = self.rfile.readline(MAX_LINE).decode("latin-1").split()
            for _ in range(MAX_HEADER_LINES):
                if self.rfile.readline(MAX_LINE) in (b"\r\n", b"\n", b""):
                    break
        except (OSError, UnicodeDecodeError):
            return
        if len(request) != 3 or not request[2].startswith("HTTP/"):
            self._send(400, "text/plain; charset=utf-8", b"bad request\n", head=False)
            return
        method, target = request[0], request[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            self._send(405, "text/plain; charset=utf-8", b"only GET\n", head=False, extra="Allow: GET, HEAD\r\n")
            return
        page = self.server.pages.get(target)
        if page is None:
            self._send(404, "text/plain; charset=utf-8", b"not found; metrics are at /metrics\n", method == "HEAD")
            return
        try:
            status, content_type, body = page()
        except Exception:
            log.exception("serving %s failed", target)
            status, content_type, body = 500, "text/plain; charset=utf-8", b"collection failed; see the agent's log\n"
        self._send(status, content_type, body, method == "HEAD")

    def _send(self, status: int, content_type: str, body: bytes, head: bool, extra: str = "") -> None:
        header = (f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n")
        with contextlib.suppress(OSError):  # the scraper went away; nothing to tell it
            self.wfile.write(header.encode("latin-1") + (b"" if head else body))
