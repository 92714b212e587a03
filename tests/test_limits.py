"""Size and time limits of the real servers: oversized bodies, request lines and headers are refused,
and clients that trickle their request (slowloris) are disconnected in bounded time while everyone
else is served.

Cost: about 25 s (two gunicorn processes; the slow clients are cut after the 10 s I/O limit).
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.test_security_support import (
    AGENT_KEY,
    WEBHOOK_TOKEN,
    Served,
    exporter_config,
    serve,
    webhook_config,
)
from vmhealth.gunicorn_worker import IO_SECONDS
from vmhealth.processes import wait_for
from vmhealth.simulator.testing import running_simulator

pytestmark = pytest.mark.slow
REPORT = {"hostname": "vm100", "vmid": "100", "cpuUsage": 1}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    folder: Path = tmp_path_factory.mktemp("limits")
    with running_simulator(nodes=1, guests=3) as sim, \
            serve("exporter", exporter_config(sim, folder, threads=4), folder) as exporter, \
            serve("webhook", webhook_config(sim, folder), folder) as webhook:
        yield {"exporter": exporter, "webhook": webhook}


def test_bodies_over_the_limits_are_413_with_the_limit_named(servers: dict[str, Served]) -> None:
    exporter, webhook = servers["exporter"].url, servers["webhook"].url
    big = {**REPORT, "padding": "x" * 65536}
    reply = requests.post(f"{exporter}/api/health/report", json=big, headers={"X-API-Key": AGENT_KEY}, timeout=30)
    assert reply.status_code == 413 and "exporter.max_body_bytes" in reply.json()["error"]
    ok = requests.post(f"{exporter}/api/health/report", json=REPORT, headers={"X-API-Key": AGENT_KEY}, timeout=30)
    assert ok.status_code == 200
    # The webhook's 4 MiB limit, announced by Content-Length: refused before the body is read.
    host, port = webhook.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.putrequest("POST", "/alerts")
        for name, value in {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json",
                            "Content-Length": str(4 * 1024 * 1024 + 1)}.items():
            connection.putheader(name, value)
        connection.endheaders()
        answer = connection.getresponse()
        assert answer.status == 413 and "larger than 4194304 bytes" in json.loads(answer.read())["error"]
    finally:
        connection.close()


def test_oversized_request_lines_and_headers_are_refused(servers: dict[str, Served]) -> None:
    for served in servers.values():
        long_line = requests.get(f"{served.url}/healthz?{'a' * 5000}", timeout=30)
        assert long_line.status_code in (400, 414)
        many = requests.get(f"{served.url}/healthz", headers={f"X-H{i}": "v" for i in range(60)}, timeout=30)
        assert many.status_code in (400, 431)
        wide = requests.get(f"{served.url}/healthz", headers={"X-Wide": "v" * 9000}, timeout=30)
        assert wide.status_code in (400, 431)
        assert requests.get(f"{served.url}/healthz", timeout=30).status_code == 200


class SlowClient(threading.Thread):
    """Sends a request's start, then one header byte every `pause` seconds until the server hangs up."""

    def __init__(self, url: str, pause: float = 0.5, give_up: float = 60):
        super().__init__(daemon=True)
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.pause, self.give_up = pause, give_up
        self.started = time.monotonic()
        self.cut_after: float | None = None
        self.cut_by_server = False
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            self.sock.sendall(b"POST /api/health/report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
            while time.monotonic() - self.started < self.give_up and not self.stopping.is_set():
                readable, _, _ = select.select([self.sock], [], [], self.pause)
                if readable and not self.sock.recv(4096):
                    self.cut_by_server = True
                    break
                self.sock.sendall(b"X")
        except OSError:
            self.cut_by_server = True  # reset by the server
        finally:
            self.cut_after = time.monotonic() - self.started
            self.sock.close()


def timed_get(url: str) -> float:
    start = time.monotonic()
    assert requests.get(url, timeout=60).status_code == 200
    return time.monotonic() - start


def test_slow_clients_are_cut_off_and_others_are_served(servers: dict[str, Served]) -> None:
    slow = {name: [SlowClient(served.url) for _ in range(3)] for name, served in servers.items()}  # < threads
    for client in (c for clients in slow.values() for c in clients):
        client.start()
    time.sleep(1.5)  # every slow client holds a thread now
    for name, served in servers.items():
        waits = [timed_get(f"{served.url}/healthz") for _ in range(5)]
        assert max(waits) < 5, f"{name}: other clients waited {waits} while slow clients trickled"
    for name, served in servers.items():
        for client in slow[name]:
            client.join(timeout=IO_SECONDS + 30)
            assert client.cut_after is not None, "a slow client was never disconnected"
            assert IO_SECONDS - 1 <= client.cut_after <= IO_SECONDS + 10, (name, client.cut_after)
        assert "took longer than 10s to send its request" in served.output()
        assert timed_get(f"{served.url}/healthz") < 5


def test_more_slow_clients_than_threads_delay_others_only_until_the_cut(servers: dict[str, Served]) -> None:
    """Four threads, six trickling clients: a normal request waits for the first cut, about 10 s, not forever."""
    served = servers["exporter"]
    slow = [SlowClient(served.url, give_up=IO_SECONDS * 4) for _ in range(6)]
    try:
        for client in slow:
            client.start()
        time.sleep(1.0)
        waited = timed_get(f"{served.url}/healthz")
        assert IO_SECONDS - 3 <= waited <= IO_SECONDS + 5, f"waited {waited:.1f}s (every thread was taken)"
        wait_for(lambda: sum(c.cut_by_server for c in slow) >= 4, 5, "the server to cut the first four")
    finally:
        for client in slow:
            client.stopping.set()
        for client in slow:
            client.join(timeout=10)
    reply = requests.post(f"{served.url}/api/health/report", json=REPORT, headers={"X-API-Key": AGENT_KEY},
                          timeout=30)
    assert reply.status_code == 200
