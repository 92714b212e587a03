"""gunicorn's threaded worker with a time limit on each request's network reads and writes.

gunicorn bounds the size of a request line and headers, and parks idle connections away from the
threads, but a client that trickles its headers or body a byte at a time holds a thread for as long
as it likes: a handful of such clients (slowloris) would take every thread of the exporter, and the
agents' heartbeats would wait. Here every request must arrive within `IO_SECONDS` of the thread
picking it up, and its reply must be taken within `IO_SECONDS` of the first byte sent; a client
slower than that is disconnected with one warning line. The application's own work is not timed.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

log = logging.getLogger(__name__)
IO_SECONDS = 10.0  # 64 KiB reports, 4 MiB Alertmanager messages and /metrics pages take far less on a LAN


class DeadlineSocket:
    """A client socket whose reads, then writes, must finish by a deadline; the rest passes through."""

    def __init__(self, sock: socket.socket, peer: Any, seconds: float):
        self._sock, self._peer, self._seconds = sock, peer, seconds
        self._deadline = 0.0
        self._writing = False
        self._timeout: float | None = sock.gettimeout()  # what gunicorn asked for; a shorter one wins

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
        peer = f"{self._peer[0]}:{self._peer[1]}" if isinstance(self._peer, tuple) else str(self._peer)
        log.warning("disconnected %s: it took longer than %gs to %s", peer, self._seconds, what)
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


class DeadlineThreadWorker(ThreadWorker):
    """gthread, with every connection's socket wrapped in a `DeadlineSocket`."""

    io_seconds = IO_SECONDS

    def handle(self, conn: Any) -> Any:
        if not isinstance(conn.sock, DeadlineSocket):
            conn.sock = DeadlineSocket(conn.sock, conn.client, self.io_seconds)
        conn.sock.begin_request()
        return super().handle(conn)
