"""Simulated in-guest agents: every running, responsive guest sends the original heartbeat payload to
the exporter every interval (with jitter). One scheduler thread and a small pool of senders, each
with one keep-alive connection per exporter, serve 10,000 guests; no thread per guest. Given several
exporter URLs (comma-separated: an exporter pair), every heartbeat goes to each, as `agent.exporter_urls`
makes the real agent do.
"""

from __future__ import annotations

import heapq
import http.client
import json
import logging
import random
import ssl
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from vmhealth.keys import derive_vm_key

from .model import Cluster, Guest

log = logging.getLogger(__name__)
MB = 1024**2


def heartbeat(guest: Guest, cluster_name: str, now: float) -> dict[str, Any]:
    """The payload the original agent sent (vmid as a string), plus the cluster name."""
    return {
        "hostname": guest.name, "vmid": str(guest.vmid), "node": guest.node, "status": "running",
        "cpuUsage": round(guest.cpu(now) * 100, 2), "ramUsage": guest.mem(now) // MB, "ramTotal": guest.maxmem // MB,
        "diskUsage": guest.disk_used() // MB, "diskTotal": guest.maxdisk // MB, "uptime": guest.guest_uptime(now),
        "timestamp": int(now), "cluster": cluster_name,
    }


class Agents:
    """Sends heartbeats for the cluster's guests to `url` (one URL or several, comma-separated) until `stop()`."""

    def __init__(self, cluster: Cluster, url: str, interval: float, api_key: str = "", key_mode: str = "shared",
                 jitter: float = 0.1, workers: int = 16, timeout: float = 5.0, verify: bool | str = True,
                 client_cert: tuple[str, str] | None = None):
        if interval <= 0:
            raise ValueError("the agent interval must be positive")
        if key_mode not in ("shared", "per-vm"):
            raise ValueError(f"agent key mode must be shared or per-vm, not {key_mode!r}")
        self.cluster = cluster
        self.urls = [part.strip().rstrip("/") + "/api/health/report" for part in url.split(",") if part.strip()]
        self.url = ",".join(self.urls)
        self.interval = interval
        self.api_key = api_key
        self.key_mode = key_mode
        self.jitter = jitter
        self.timeout = timeout
        self.verify = verify
        self.client_cert = client_cert  # (cert, key) for an exporter that wants client certificates
        self.workers = workers
        self._stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._slots = threading.BoundedSemaphore(workers * 4)
        self.behind = 0.0  # how late the scheduler is, in seconds (the exporter not keeping up)
        self.results: Counter[str] = Counter()
        self.last_error: str | None = None
        self.last_sent: dict[int, float] = {}

    def key_for(self, vmid: int) -> str:
        if self.key_mode == "per-vm":
            return derive_vm_key(self.api_key, self.cluster.name, vmid)
        return self.api_key

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sim-agent")
        self._thread = threading.Thread(target=self._loop, name="sim-agents", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"url": self.url, "interval": self.interval, "key_mode": self.key_mode,
                    "results": dict(self.results), "in_flight": self._in_flight, "last_error": self.last_error,
                    "behind_seconds": round(self.behind, 3),
                    "reporting": len(self.last_sent)}

    def _loop(self) -> None:
        rng = random.Random()
        now = time.time()
        with self.cluster.lock:
            vmids = list(self.cluster.guests)
        due = [(now + rng.uniform(0, self.interval), vmid) for vmid in vmids]
        heapq.heapify(due)
        recheck = min(self.interval, 1.0)
        while not self._stop.is_set():
            if not due:
                self._stop.wait(1.0)
                continue
            when, vmid = due[0]
            wait = when - time.time()
            if wait > 0:
                self._stop.wait(min(wait, 0.5))
                continue
            heapq.heappop(due)
            self.cluster.tick()
            with self.cluster.lock:
                guest = self.cluster.guests[vmid]
                now = time.time()
                responsive = self.cluster.agent_responsive(guest, now) and not guest.agent_silenced
                payload = heartbeat(guest, self.cluster.name, now) if responsive else None
            if payload is None:
                heapq.heappush(due, (now + recheck, vmid))  # a silent guest: look again soon (it may reboot)
                continue
            for url in self.urls:
                self._send(url, vmid, payload, late=now - when)
            spread = 1 + rng.uniform(-self.jitter, self.jitter)
            heapq.heappush(due, (max(when + self.interval * spread, now + 0.01), vmid))

    def _send(self, url: str, vmid: int, payload: dict[str, Any], late: float) -> None:
        """Hand the heartbeat to a sender; when the exporter is slower than the guests, wait (heartbeats
        arrive late, in turn) instead of queueing without bound."""
        while not self._slots.acquire(timeout=0.5):
            if self._stop.is_set():
                return
        with self._lock:
            self._in_flight += 1
            self.behind = max(0.0, late)
        assert self._pool is not None
        try:
            self._pool.submit(self._post, url, vmid, payload)
        except RuntimeError:  # shutting down
            self._slots.release()
            with self._lock:
                self._in_flight -= 1

    def _connection(self, url: str) -> http.client.HTTPConnection:
        """This sender thread's keep-alive connection to one exporter (plain http.client: cheap per request)."""
        connections: dict[str, http.client.HTTPConnection] = getattr(self._local, "connections", {})
        self._local.connections = connections
        connection = connections.get(url)
        if connection is None:
            parts = urlsplit(url)
            if parts.scheme == "https":
                context = ssl.create_default_context(cafile=self.verify if isinstance(self.verify, str) else None)
                if self.verify is False:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                if self.client_cert:
                    context.load_cert_chain(*self.client_cert)
                connection = http.client.HTTPSConnection(parts.netloc, timeout=self.timeout, context=context)
            else:
                connection = http.client.HTTPConnection(parts.netloc, timeout=self.timeout)
            connections[url] = connection
        return connection

    def _post(self, url: str, vmid: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", "X-API-Key": self.key_for(vmid)}
        error = None
        try:
            connection = self._connection(url)
            path = urlsplit(url).path
            try:
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                connection.close()  # the server closed an idle keep-alive connection: once more on a new one
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
            text = response.read()
            result = str(response.status)
            if response.status != 200:
                error = f"{response.status} {text[:200].decode('utf-8', 'replace')}"
        except Exception as exc:  # refused, timeout: the agent just tries again next interval
            getattr(self._local, "connections", {}).pop(url, None)
            result, error = "error", f"{type(exc).__name__}: {exc}"
        self._slots.release()
        with self._lock:
            self._in_flight -= 1
            self.results[result] += 1
            if error:
                self.last_error = error
            else:
                self.last_sent[vmid] = time.time()
