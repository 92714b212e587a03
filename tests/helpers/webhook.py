"""Shared pieces of the webhook tests: a configuration, a Proxmox cluster behind `responses`, payloads.

No tests live here; the module is named so that only the webhook's own files hold it.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests
import responses

from vmhealth.config import Config, load

PAYLOADS = Path(__file__).resolve().parents[1] / "data" / "alertmanager-webhook"
HOST = "pve.test:8006"
BASE = f"https://{HOST}/api2/json"
TOKEN = "alertmanager-secret-token"
ADMIN = "admin-secret-token"


def make_config(database_url: str, webhook: dict[str, Any] | None = None, **policy: Any) -> Config:
    raw = {
        "clusters": [{"name": "lab", "host": HOST, "token_id": "monitor@pve!vmhealth",
                      "token_secret": "00000000-0000-0000-0000-000000000000", "verify_ssl": False}],
        "webhook": {"token": TOKEN, "admin_token": ADMIN, "database_url": database_url,
                    "policy": {"cooldown": "10m", "boot_grace": "3m", **policy}, **(webhook or {})},
    }
    return load(raw=raw, environ={}, components=("webhook",))


def payload(name: str = "v4-firing-single.json") -> dict[str, Any]:
    return json.loads((PAYLOADS / name).read_text())


def firing(vmid: int, fingerprint: str | None = None, starts_at: str = "2026-01-01T00:05:00Z",
           status: str = "firing", **labels: str) -> dict[str, Any]:
    """A one-alert VMHung notification for `vmid`."""
    all_labels = {"alertname": "VMHung", "action": "reset", "severity": "critical", "vmid": str(vmid),
                  "cluster": "lab", **labels}
    return {
        "receiver": "vmhealth", "status": status, "version": "4", "groupKey": f"{{}}:{{vmid=\"{vmid}\"}}",
        "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": all_labels, "commonAnnotations": {},
        "externalURL": "http://am:9093",
        "alerts": [{"status": status, "labels": all_labels, "annotations": {"summary": "hung"},
                    "startsAt": starts_at,
                    "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-01-01T01:00:00Z",
                    "generatorURL": "http://prom:9090", "fingerprint": fingerprint or f"fp{vmid:014d}"}],
    }


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class FakePve:
    """A Proxmox cluster as `responses` callbacks: guests, nodes, quorum, tasks and failure modes."""

    def __init__(self, mock: responses.RequestsMock):
        self.lock = threading.Lock()
        self.guests: dict[int, dict[str, Any]] = {}
        self.nodes = {"pve1": 1, "pve2": 1}
        self.quorate = 1
        self.exitstatus: list[str] = []  # per action POST, in order; "OK" when empty
        self.post_error: list[Any] = []  # per action POST: an int HTTP status or an exception to raise
        self.start_task_on_error = False  # a 5xx/timeout POST that still started its task
        self.posts: list[tuple[str, int, str]] = []  # (node, vmid, action)
        # agent/ping of a QEMU guest, per vmid: "ok", an error message for a 500, an int HTTP status, an
        # exception to raise, or a callable(request) returning one of those; the guest agent of a hung
        # guest is not running when nothing is set.
        self.ping: dict[int, Any] = {}
        self.pings: list[tuple[str, int, float]] = []  # (node, vmid, the request's timeout)
        self.tasks: dict[str, dict[str, Any]] = {}
        self.counter = 0
        mock.add_callback(responses.GET, re.compile(re.escape(BASE) + r"/.*"), callback=self.get)
        mock.add_callback(responses.POST, re.compile(re.escape(BASE) + r"/.*"), callback=self.post)

    def add(self, vmid: int, kind: str = "qemu", node: str = "pve1", **fields: Any) -> dict[str, Any]:
        guest = {"vmid": vmid, "type": kind, "node": node, "name": f"vm{vmid}", "status": "running",
                 "uptime": 86400, "template": 0, **fields}
        if kind == "qemu":
            guest.setdefault("qmpstatus", "running")
        self.guests[vmid] = guest
        return guest

    def resets(self, vmid: int | None = None) -> int:
        return sum(1 for _, v, a in self.posts if a in ("reset", "reboot") and (vmid is None or v == vmid))

    @staticmethod
    def _ok(data: Any) -> tuple[int, dict[str, str], str]:
        return 200, {"Content-Type": "application/json"}, json.dumps({"data": data})

    def get(self, request: Any) -> tuple[int, dict[str, str], str]:
        path = urlsplit(request.url).path.removeprefix("/api2/json/")
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        with self.lock:
            if path == "cluster/resources":
                return self._ok([{k: v for k, v in g.items() if k not in ("qmpstatus", "lock")}
                                 | {"id": f"{g['type']}/{g['vmid']}"} for g in self.guests.values()])
            if path == "cluster/status":
                return self._ok([{"type": "cluster", "name": "lab", "quorate": self.quorate, "nodes": 2}] + [
                    {"type": "node", "name": n, "online": up, "id": f"node/{n}"} for n, up in self.nodes.items()])
            match = re.fullmatch(r"nodes/([^/]+)/(qemu|lxc)/(\d+)/status/current", path)
            if match:
                guest = self.guests.get(int(match[3]))
                if guest is None or guest["node"] != match[1]:
                    return 500, {}, json.dumps({"data": None, "message": "Configuration file does not exist\n"})
                return self._ok({k: v for k, v in guest.items() if k not in ("node", "type")})
            match = re.fullmatch(r"nodes/([^/]+)/tasks/([^/]+)/status", path)
            if match:
                return self._ok(self.tasks[unquote(match[2])])
            match = re.fullmatch(r"nodes/([^/]+)/tasks", path)
            if match:
                found = [t for t in self.tasks.values() if t["node"] == match[1]
                         and ("vmid" not in query or t["id"] == query["vmid"])
                         and ("typefilter" not in query or t["type"] == query["typefilter"])
                         and t["starttime"] >= int(query.get("since", 0))]
                return self._ok(found)
        return 501, {}, json.dumps({"data": None, "message": f"Method 'GET /{path}' not implemented\n"})

    def post(self, request: Any) -> tuple[int, dict[str, str], str]:
        path = urlsplit(request.url).path.removeprefix("/api2/json/")
        ping = re.fullmatch(r"nodes/([^/]+)/qemu/(\d+)/agent/ping", path)
        if ping:
            return self.agent_ping(request, ping[1], int(ping[2]))
        match = re.fullmatch(r"nodes/([^/]+)/(qemu|lxc)/(\d+)/status/(\w+)", path)
        if not match:
            return 501, {}, json.dumps({"data": None, "message": f"Method 'POST /{path}' not implemented\n"})
        node, kind, vmid, action = match[1], match[2], int(match[3]), match[4]
        if kind == "lxc" and action == "reset":
            return 501, {}, json.dumps({"data": None, "message": "Method 'POST /nodes/.../reset' not implemented\n"})
        with self.lock:
            self.posts.append((node, vmid, action))
            error = self.post_error.pop(0) if self.post_error else None
            exitstatus = self.exitstatus.pop(0) if self.exitstatus else "OK"
            self.counter += 1
            task_type = {"reset": "qmreset", "reboot": "vzreboot" if kind == "lxc" else "qmreboot",
                         "stop": "qmstop" if kind == "qemu" else "vzstop",
                         "start": "qmstart" if kind == "qemu" else "vzstart"}[action]
            now = int(time.time())
            upid = f"UPID:{node}:{self.counter:08X}:0000ABCD:{now:08X}:{task_type}:{vmid}:monitor@pve!vmhealth:"
            if error is None or self.start_task_on_error:
                self.tasks[upid] = {"upid": upid, "node": node, "type": task_type, "id": str(vmid), "starttime": now,
                                    "status": "stopped", "exitstatus": exitstatus, "user": "monitor@pve"}
                if exitstatus in ("OK",) and action in ("reset", "reboot", "start"):
                    self.guests[vmid]["uptime"] = 5
        if isinstance(error, int):
            message = {403: f"Permission check failed (/vms/{vmid}, VM.PowerMgmt)\n"}.get(error, "internal error\n")
            return error, {}, json.dumps({"data": None, "message": message})
        if error is not None:
            raise error
        return self._ok(upid)


    def agent_ping(self, request: Any, node: str, vmid: int) -> tuple[int, dict[str, str], str]:
        with self.lock:
            self.pings.append((node, vmid, request.req_kwargs.get("timeout")))
            answer = self.ping.get(vmid, "QEMU guest agent is not running")
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, BaseException):
            raise answer
        if answer == "ok":
            return self._ok({"result": {}})
        status = answer if isinstance(answer, int) else 500
        message = {403: f"Permission check failed (/vms/{vmid}, VM.GuestAgent.Audit|VM.GuestAgent.Unrestricted)"}.get(
            status, answer if isinstance(answer, str) else "internal error")
        return status, {}, json.dumps({"data": None, "message": message + "\n"})


def proxmox_reason(response: Any) -> Any:
    """A `responses` response_callback: the status line carries the error message, as Proxmox's does
    (`HTTP/1.1 500 QEMU guest agent is not running`), which is where proxmoxer reads it from."""
    if response.status_code >= 400:
        try:
            message = json.loads(response.content or b"null")["message"]
        except (ValueError, TypeError, KeyError):
            message = None
        if isinstance(message, str) and message.strip():
            response.reason = message.strip()
    return response


def timeout_error() -> Exception:
    return requests.exceptions.ReadTimeout("read timed out")


def fresh(data: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(data)


def send_alert(am: str, vmid: int, cluster: str, resolved: bool = False) -> None:
    """Hand a real Alertmanager a VMHung alert for `vmid`, as Prometheus would."""
    now = datetime.now(UTC)
    alert: dict[str, Any] = {
        "labels": {"alertname": "VMHung", "action": "reset", "severity": "critical", "cluster": cluster,
                   "vmid": str(vmid)},
        "annotations": {"summary": "running in Proxmox, no heartbeat"},
        "startsAt": (now - timedelta(minutes=10)).isoformat(),
    }
    if resolved:
        alert["endsAt"] = now.isoformat()
    response = requests.post(f"{am}/api/v2/alerts", json=[alert], timeout=10)
    assert response.status_code == 200, response.text


