"""gunicorn's threaded worker, made safe to expose to clients that are slow, idle or hostile.

Every guest can reach the exporter, so one guest can open hundreds of connections and trickle a byte
at a time, or send nothing. Stock gthread hands a new connection to a thread, which then waits for
the request: a few hundred such connections keep the 8 threads busy, and the other guests'
heartbeats (and Alertmanager's notifications, on the webhook) wait for minutes. Here:

- a request is read in the worker's event loop, without a thread, until it is complete (head and
  body); only a complete request takes a thread, so a slow or idle client costs a socket and at
  most its buffered bytes, never a thread;
- it must be complete within `REQUEST_SECONDS` of its first byte being awaited (accept, or the end
  of the previous reply on a kept-alive connection), else it is answered 408 and closed;
- one address may hold at most `max_connections_per_address` connections (more are answered 503 and
  closed at accept) and at most half the threads at once (its other complete requests wait in the
  loop), so the slow readers of one address cannot take every thread either;
- a reply must be taken within `REQUEST_SECONDS` of its first byte being sent (`DeadlineSocket`);
- buffered request bytes are capped per address and in total.

Each refusal is counted by reason (`process_counters`) and logged at most once a minute per
address and reason.

With TLS (gunicorn's `certfile`), the handshake is done in the event loop too, non-blocking and within
the same `REQUEST_SECONDS`: stock gthread does it in a thread, where a client that stops mid-handshake
holds that thread. The context comes from gunicorn's `ssl_context` hook (`vmhealth.tls`: re-read when
the files change). A failed handshake is counted (`tls-handshake`) and logged with OpenSSL's reason.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import ssl
import time
from collections import defaultdict, deque
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn import sock as gunicorn_sock
from gunicorn.workers.gthread import TConn, ThreadWorker

from vmhealth.process_counters import CONNECTIONS_REFUSED, OncePerMinute
from vmhealth.tls import handshake_failure

log = logging.getLogger(__name__)
IO_SECONDS = 10.0  # 64 KiB reports, 4 MiB Alertmanager messages and /metrics pages take far less on a LAN
REQUEST_SECONDS = IO_SECONDS
MAX_CONNECTIONS_PER_ADDRESS = 64
MAX_BODY_BYTES = 4 * 1024 * 1024  # the largest body any route takes (the webhook's); the app sets its own
MAX_BUFFERED_PER_ADDRESS = 16 * 1024 * 1024
MAX_BUFFERED_TOTAL = 128 * 1024 * 1024

_CANNED = {
    408: b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 40\r\n"
         b"\r\nthe request did not arrive within 10 s\r\n",
    413: b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 29\r\n"
         b"\r\nthe request is far too large\n",
    431: b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    503: b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
         b"Content-Length: 41\r\n\r\ntoo many connections from this address\r\n",
}


def request_end(buf: bytes | bytearray, max_head: int, max_body: int) -> int | str | None:
    """Where the first request in `buf` ends (an offset), None while it is incomplete, or a refusal:
    "head-too-large" or "request-too-large" (a chunked body beyond `max_body`).

    A head gunicorn or the app will refuse is complete as it stands, so that they answer it with
    their own message: a bad Content-Length (400), or one beyond `max_body` (the app's 413, given
    before any of the body is read)."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return "head-too-large" if len(buf) > max_head else None
    if head_end > max_head:
        return "head-too-large"
    body = head_end + 4
    length, chunked = 0, False
    for line in bytes(buf[:head_end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            value = value.strip()
            if not value.isdigit() or int(value) > max_body:
                return body
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        return _chunked_end(buf, body, body + max_body)
    return body + length if len(buf) >= body + length else None


def _chunked_end(buf: bytes | bytearray, pos: int, limit: int) -> int | str | None:
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return "request-too-large" if len(buf) > limit else None
        size_text = bytes(buf[pos:line_end]).split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return line_end + 2  # malformed: gunicorn's parser answers 400
        if size == 0:
            return _trailers_end(buf, line_end + 2)
        pos = line_end + 2 + size + 2
        if pos > limit:
            return "request-too-large"
        if pos > len(buf):
            return None


def _trailers_end(buf: bytes | bytearray, pos: int) -> int | None:
    """After the last chunk: optional trailer lines, then an empty line."""
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        if line_end == pos:
            return pos + 2
        pos = line_end + 2


def _without_expect_continue(data: bytes, head_end: int) -> bytes:
    """The request without `Expect: 100-continue` once the loop has answered it (so the app does not
    answer it a second time)."""
    lines = data[:head_end].split(b"\r\n")
    kept = [lines[0]] + [line for line in lines[1:] if line.split(b":")[0].strip().lower() != b"expect"]
    return b"\r\n".join(kept) + data[head_end:]


class DeadlineSocket:
    """A client socket whose reads, then writes, must finish by a deadline; the rest passes through."""

    def __init__(self, sock: socket.socket, peer: Any, seconds: float):
        self._sock, self._peer, self._seconds = sock, peer, seconds
        self._deadline = 0.0
        self._writing = False
        self._timeout: float | None = sock.gettimeout()  # what gunicorn asked for; a shorter one wins

    @property
    def raw(self) -> socket.socket:
        return self._sock

    def begin_request(self) -> None:
        self._deadline = time.monotonic() + self._seconds
        self._writing = False

    def settimeout(self, value: float | None) -> None:
        self._timeout = value
        self._sock.settimeout(value)

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    def _cut(self, writing: bool) -> None:
        what = "take its reply" if writing else "send its request"
        CONNECTIONS_REFUSED.count("reply-timeout" if writing else "request-timeout")
        log.warning("disconnected %s: it took longer than %gs to %s", _peer_text(self._peer), self._seconds, what)
        # ECONNRESET: gunicorn closes the connection without a traceback
        raise ConnectionResetError(errno.ECONNRESET, f"slower than {self._seconds:g}s to {what}")

    def _io(self, writing: bool, method: str, *args: Any) -> Any:
        if writing and not self._writing:
            self._writing = True
            self._deadline = time.monotonic() + self._seconds
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            self._cut(writing)
        ours = self._timeout is None or remaining < self._timeout
        self._sock.settimeout(remaining if ours else self._timeout)
        try:
            return getattr(self._sock, method)(*args)
        except TimeoutError:
            if ours:
                self._cut(writing)
            raise
        finally:
            self._sock.settimeout(self._timeout)

    def recv(self, *args: Any) -> bytes:
        return self._io(False, "recv", *args)

    def recv_into(self, *args: Any) -> int:
        return self._io(False, "recv_into", *args)

    def send(self, *args: Any) -> int:
        return self._io(True, "send", *args)

    def sendall(self, *args: Any) -> None:
        return self._io(True, "sendall", *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _close_after_alert(raw: socket.socket) -> None:
    """End a refused handshake so that the client reads OpenSSL's alert (`certificate required`):
    FIN after it, and what the client already sent read away, lest closing with unread bytes send a
    reset that overtakes the alert."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(raw, socket.SHUT_WR)
        for _ in range(16):
            if not socket.socket.recv(raw, 65536):
                break


def _peer_text(peer: Any) -> str:
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "unix socket")


def _address(peer: Any) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unix"


class _Conn(TConn):
    """A connection with what the event loop buffered for its next request."""

    def __init__(self, worker: GuardedThreadWorker, *args: Any):
        super().__init__(*args)
        self.worker = worker
        self.address = _address(self.client)
        self.inbox = bytearray()
        self.deadline = 0.0
        self.closed = False
        self.handshaking = False

    def init(self) -> None:
        """The HTTP/1 parser only: a TLS socket was wrapped, and its handshake done, in the loop."""
        if not self.initialized:
            self.initialized = True
            self.parser = http.get_parser(self.cfg, self.sock, self.client)

    def close(self, graceful: bool = False) -> None:
        if not self.closed:
            self.closed = True
            self.worker.forget(self)
        super().close(graceful)


class GuardedThreadWorker(ThreadWorker):
    """gthread with requests buffered in the event loop and per-address caps (see the module doc)."""

    io_seconds = IO_SECONDS
    request_seconds = REQUEST_SECONDS
    max_connections_per_address = MAX_CONNECTIONS_PER_ADDRESS
    max_body_bytes = MAX_BODY_BYTES
    max_buffered_per_address = MAX_BUFFERED_PER_ADDRESS
    max_buffered_total = MAX_BUFFERED_TOTAL

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.open_by_address: dict[str, int] = defaultdict(int)
        self.busy_by_address: dict[str, int] = defaultdict(int)
        self.waiting_by_address: dict[str, deque[_Conn]] = defaultdict(deque)
        self.buffered_by_address: dict[str, int] = defaultdict(int)
        self.buffered_total = 0
        self.receiving: dict[_Conn, None] = {}  # insertion order is deadline order
        self.busy_cap = max(1, self.cfg.threads // 2)
        self.max_head = (self.cfg.limit_request_line or 8190) + \
            (self.cfg.limit_request_fields or 100) * (self.cfg.limit_request_field_size or 8190) + 4
        self._refusal_log = OncePerMinute()

    # --- accounting ------------------------------------------------------------------------------

    def _refuse(self, conn_or_sock: Any, address: str, reason: str, status: int, why: str) -> None:
        CONNECTIONS_REFUSED.count(reason)
        seen = self._refusal_log.due((address, reason))
        if seen:
            log.warning("refused %d connection(s) from %s in the last minute: %s (%s)", seen, address, why, reason)
        raw = conn_or_sock.sock.raw if isinstance(conn_or_sock, _Conn) else conn_or_sock
        with contextlib.suppress(OSError):
            raw.setblocking(False)
            if not self.cfg.is_ssl or isinstance(raw, ssl.SSLSocket):  # no plain text to a TLS client
                raw.send(_CANNED[status])
        if isinstance(conn_or_sock, _Conn):
            self._stop_receiving(conn_or_sock)
            self.nr_conns -= 1
            conn_or_sock.close()
        else:
            conn_or_sock.close()

    def forget(self, conn: _Conn) -> None:
        """A connection is closing: release what it counted against its address."""
        self._release_buffer(conn)
        self.open_by_address[conn.address] -= 1
        if self.open_by_address[conn.address] <= 0:
            del self.open_by_address[conn.address]

    def _release_buffer(self, conn: _Conn) -> None:
        if conn.inbox:
            self.buffered_by_address[conn.address] -= len(conn.inbox)
            self.buffered_total -= len(conn.inbox)
            if self.buffered_by_address[conn.address] <= 0:
                del self.buffered_by_address[conn.address]
            conn.inbox = bytearray()

    # --- the event loop's side -------------------------------------------------------------------

    def accept(self, listener: Any) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        address = _address(client_addr)
        if self.open_by_address[address] >= self.max_connections_per_address:
            if not self.open_by_address[address]:
                del self.open_by_address[address]
            self._refuse(client_sock, address, "per-address-limit", 503,
                         f"more than {self.max_connections_per_address} connections open at once")
            return
        self.open_by_address[address] += 1
        self.nr_conns += 1
        if self.cfg.is_ssl:
            try:
                client_sock = gunicorn_sock.ssl_context(self.cfg).wrap_socket(
                    client_sock, server_side=True, do_handshake_on_connect=False,
                    suppress_ragged_eofs=self.cfg.suppress_ragged_eofs)
            except OSError as exc:  # the client reset the connection already
                self.open_by_address[address] -= 1
                self.nr_conns -= 1
                client_sock.close()
                log.debug("TLS wrap of %s failed: %s", address, exc)
                return
        conn = _Conn(self, self.cfg, client_sock, client_addr, listener.getsockname())
        conn.sock = DeadlineSocket(client_sock, client_addr, self.io_seconds)
        conn.init()  # the HTTP/1 parser only: it reads nothing until a thread asks it for the request
        if self.cfg.is_ssl:
            self._start_handshake(conn)
        else:
            self._start_receiving(conn)

    def _start_handshake(self, conn: _Conn) -> None:
        conn.handshaking = True
        conn.deadline = time.monotonic() + self.request_seconds
        self.receiving[conn] = None
        self.poller.register(conn.sock.raw, selectors.EVENT_READ, partial(self._on_handshake, conn))

    def _on_handshake(self, conn: _Conn, _fileobj: Any) -> None:
        """One step of a TLS handshake, without blocking; then the request is read as over TCP."""
        raw = conn.sock.raw
        try:
            raw.do_handshake()
        except ssl.SSLWantReadError:
            self.poller.modify(raw, selectors.EVENT_READ, partial(self._on_handshake, conn))
            return
        except ssl.SSLWantWriteError:
            self.poller.modify(raw, selectors.EVENT_WRITE, partial(self._on_handshake, conn))
            return
        except OSError as exc:
            self._handshake_failed(conn, exc)
            return
        conn.handshaking = False
        self.poller.modify(raw, selectors.EVENT_READ, partial(self._on_receive, conn))
        self._on_receive(conn, None)  # the request may have come with the handshake's last flight

    def _handshake_failed(self, conn: _Conn, exc: OSError) -> None:
        why = handshake_failure(exc)
        CONNECTIONS_REFUSED.count("tls-handshake")
        seen = self._refusal_log.due((conn.address, "tls-handshake", why))
        if seen:
            log.warning("refused %d TLS handshake(s) from %s in the last minute: %s", seen, conn.address, why)
        self._stop_receiving(conn)
        _close_after_alert(conn.sock.raw)
        self.nr_conns -= 1
        conn.close()

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection has its next request coming: read it here, not in a thread."""
        if not isinstance(conn, _Conn):
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start_receiving(conn)

    def _start_receiving(self, conn: _Conn) -> None:
        conn.sock.raw.setblocking(False)
        conn.deadline = time.monotonic() + self.request_seconds
        self.receiving[conn] = None
        self.poller.register(conn.sock.raw, 1, partial(self._on_receive, conn))  # 1: EVENT_READ

    def _stop_receiving(self, conn: _Conn) -> None:
        if self.receiving.pop(conn, 0) is None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock.raw)

    def _on_receive(self, conn: _Conn, _fileobj: Any) -> None:
        raw = conn.sock.raw
        try:
            data = raw.recv(65536)  # over TLS: one whole record (16 KiB at most); OpenSSL reads no further ahead
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._stop_receiving(conn)
            self.nr_conns -= 1
            conn.close()
            return
        self._take(conn, data)

    def _take(self, conn: _Conn, data: bytes) -> None:
        """Add bytes to the connection's request; hand it to a thread once it is complete."""
        conn.inbox += data
        self.buffered_by_address[conn.address] += len(data)
        self.buffered_total += len(data)
        if (self.buffered_by_address[conn.address] > self.max_buffered_per_address
                or self.buffered_total > self.max_buffered_total):
            self._refuse(conn, conn.address, "buffer-limit", 503, "too many request bytes buffered")
            return
        end = request_end(conn.inbox, self.max_head, self.max_body_bytes)
        if end == "head-too-large":
            self._refuse(conn, conn.address, "request-too-large", 431, "request head too large")
        elif end == "request-too-large":
            self._refuse(conn, conn.address, "request-too-large", 413,
                         f"chunked body larger than {self.max_body_bytes} bytes")
        elif end is None:
            self._answer_expect_continue(conn)
        else:
            self._dispatch(conn)

    def _receive_pipelined(self, conn: _Conn) -> None:
        """The client sent its next request behind the last one: read the rest of it here too."""
        self._start_receiving(conn)
        self._take(conn, conn.parser.unreader.take_buffered())

    def _answer_expect_continue(self, conn: _Conn) -> None:
        """A client that waits for `100 Continue` before its body gets it from here, once."""
        head_end = conn.inbox.find(b"\r\n\r\n")
        if head_end < 0 or b"100-continue" not in conn.inbox[:head_end].lower():
            return
        stripped = _without_expect_continue(bytes(conn.inbox), head_end)
        self._release_buffer(conn)
        conn.inbox = bytearray(stripped)
        self.buffered_by_address[conn.address] += len(stripped)
        self.buffered_total += len(stripped)
        with contextlib.suppress(OSError):
            conn.sock.raw.send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _dispatch(self, conn: _Conn) -> None:
        self._stop_receiving(conn)
        data = bytes(conn.inbox)
        self._release_buffer(conn)
        conn.parser.unreader.unread(data)
        conn.data_ready = True
        conn.sock.setblocking(True)
        self.enqueue_req(conn)

    def murder_pending(self) -> None:
        """Cut the connections whose request did not arrive in time; a stopping worker cuts at once
        those that have not started one."""
        super().murder_pending()
        now = time.monotonic()
        if not self.alive:
            for conn in [c for c in self.receiving if not c.inbox]:
                self._stop_receiving(conn)
                self.nr_conns -= 1
                conn.close()
        while self.receiving:
            conn = next(iter(self.receiving))
            if conn.deadline > now:
                break
            what = "TLS handshake not complete" if conn.handshaking else \
                "request not complete" if conn.inbox else "no request"
            self._refuse(conn, conn.address, "request-timeout", 408, f"{what} within {self.request_seconds:g}s")

    # --- threads ---------------------------------------------------------------------------------

    def enqueue_req(self, conn: Any) -> None:
        address = getattr(conn, "address", None)
        if address is None:
            return super().enqueue_req(conn)
        if self.busy_by_address[address] >= self.busy_cap:
            self.waiting_by_address[address].append(conn)
            return
        self.busy_by_address[address] += 1
        super().enqueue_req(conn)

    def finish_request(self, conn: Any, fs: Any) -> None:
        address = getattr(conn, "address", None)
        if address is not None:
            self.busy_by_address[address] -= 1
            if self.busy_by_address[address] <= 0:
                del self.busy_by_address[address]
        if isinstance(conn, _Conn) and self.alive and not fs.cancelled() and fs.exception() is None \
                and fs.result() is True and conn.parser.unreader.buf.getvalue():
            self._receive_pipelined(conn)
        else:
            super().finish_request(conn, fs)
        if address is not None:
            waiting = self.waiting_by_address.get(address)
            while waiting and self.busy_by_address[address] < self.busy_cap:
                self.enqueue_req(waiting.popleft())
            if waiting is not None and not waiting:
                del self.waiting_by_address[address]

    def handle(self, conn: Any) -> Any:
        if not isinstance(conn.sock, DeadlineSocket):
            conn.sock = DeadlineSocket(conn.sock, conn.client, self.io_seconds)
        conn.sock.begin_request()
        return super().handle(conn)


def worker_class(max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
                 max_body_bytes: int = MAX_BODY_BYTES) -> type[GuardedThreadWorker]:
    """The worker with this server's per-address connection cap and its app's body limit."""
    return type("GuardedThreadWorker", (GuardedThreadWorker,),
                {"max_connections_per_address": max_connections_per_address, "max_body_bytes": max_body_bytes})
