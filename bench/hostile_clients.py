"""Hostile HTTP clients for the connection-exhaustion benchmark and test: one source address holds many
connections that never finish a request.

    flood = ConnectionFlood("127.0.0.1", 9747, source="127.0.0.2", connections=200, mode="trickle")
    flood.start(); ...; flood.stop()

`trickle` sends a request line and then one header byte every `pause` seconds (slowloris); `idle`
sends nothing. A connection the server cuts or refuses is opened again at once, so the server always
sees `connections` attempts held open. One thread and one selector drive them all.
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from dataclasses import dataclass


@dataclass
class FloodCounts:
    opened: int = 0
    cut: int = 0  # closed or reset by the server (including refusals at accept)
    failed: int = 0  # could not connect at all


class ConnectionFlood(threading.Thread):
    """`connections` sockets from `source` to host:port, kept open and reopened (see the module doc)."""

    def __init__(self, host: str, port: int, *, source: str = "127.0.0.2", connections: int = 200,
                 mode: str = "trickle", pause: float = 2.0, path: str = "/api/health/report"):
        super().__init__(daemon=True, name=f"flood-{mode}")
        if mode not in ("trickle", "idle"):
            raise ValueError(f"mode must be trickle or idle, not {mode!r}")
        self.target, self.source, self.wanted, self.mode, self.pause = (host, port), source, connections, mode, pause
        self.request_start = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n".encode()
        self.counts = FloodCounts()
        self._stopping = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._socks: dict[socket.socket, float] = {}  # socket -> when it next sends a byte

    def _open(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((self.source, 0))
            sock.settimeout(2.0)
            sock.connect(self.target)
            if self.mode == "trickle":
                sock.sendall(self.request_start)
            sock.setblocking(False)
        except OSError:
            sock.close()
            self.counts.failed += 1
            return
        self.counts.opened += 1
        self._socks[sock] = time.monotonic() + self.pause
        self._selector.register(sock, selectors.EVENT_READ)

    def _drop(self, sock: socket.socket) -> None:
        self._selector.unregister(sock)
        del self._socks[sock]
        sock.close()
        self.counts.cut += 1

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                while len(self._socks) < self.wanted and not self._stopping.is_set():
                    self._open()
                for key, _ in self._selector.select(timeout=0.2):
                    self._drop(key.fileobj)  # the server answered (a refusal) or hung up: cut either way
                if self.mode == "trickle":
                    now = time.monotonic()
                    for sock, due in list(self._socks.items()):
                        if due <= now:
                            try:
                                sock.send(b"X")
                                self._socks[sock] = now + self.pause
                            except OSError as e:
                                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                                    self._drop(sock)
        finally:
            for sock in list(self._socks):
                self._selector.unregister(sock)
                sock.close()
            self._socks.clear()
            self._selector.close()

    def held(self) -> int:
        return len(self._socks)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=10)
