"""The agent's own HTTP: replies in every framing a server may choose, and a /metrics server that
refuses what it does not serve and is not held up by a silent client."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from vmhealth.agent.wire import HttpError, PageServer, post


def one_reply_server(reply: bytes) -> tuple[socket.socket, list[bytes]]:
    """A listening socket that answers one connection with the raw `reply` bytes and records the request."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(
                b"content-length")))
            while len(body) < length:
                body += conn.recv(4096)
            seen.append(head + b"\r\n\r\n" + body)
            conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return listener, seen


@pytest.mark.parametrize("reply, body", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
    (b"HTTP/1.1 401 UNAUTHORIZED\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n", b"abcde"),
    (b"HTTP/1.0 503 Service Unavailable\r\n\r\nuntil close", b"until close"),
])
def test_post_reads_every_reply_framing(reply: bytes, body: bytes) -> None:
    listener, seen = one_reply_server(reply)
    try:
        port = listener.getsockname()[1]
        status, data = post(f"http://127.0.0.1:{port}/api/health/report?x=1", b'{"a":1}', {"X-API-Key": "k"}, 5)
    finally:
        listener.close()
    assert status == int(reply.split()[1]) and data == body
    request = seen[0]
    assert request.startswith(b"POST /api/health/report?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{port}".encode() in request and b"X-API-Key: k" in request
    assert request.endswith(b'\r\n\r\n{"a":1}')


def test_post_rejects_a_reply_that_is_not_http() -> None:
    listener, _ = one_reply_server(b"SSH-2.0-OpenSSH_9.2\r\n")
    try:
        with pytest.raises(HttpError, match="not an HTTP reply"):
            post(f"http://127.0.0.1:{listener.getsockname()[1]}/", b"{}", {}, 5)
    finally:
        listener.close()


def test_post_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="not an http"):
        post("ftp://example.org/", b"", {}, 1)


@pytest.fixture
def pages(port: int) -> Iterator[int]:
    server = PageServer("127.0.0.1", port, {"/metrics": lambda: (200, "text/plain", b"up 1\n")})
    server.start()
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()


def raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    return data


def test_server_answers_get_head_and_refuses_the_rest(pages: int) -> None:
    assert raw(pages, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"\r\n\r\nup 1\n")
    head = raw(pages, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 5" in head and head.endswith(b"\r\n\r\n")
    assert raw(pages, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").startswith(b"HTTP/1.1 405")
    assert raw(pages, b"GET /other HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
    assert raw(pages, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400")


def test_a_silent_client_does_not_block_scrapes(pages: int) -> None:
    with socket.create_connection(("127.0.0.1", pages), timeout=5):  # connects and says nothing
        assert raw(pages, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
