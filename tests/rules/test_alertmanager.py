"""alertmanager/alertmanager.yml in a real Alertmanager: inhibitions, and what reaches the webhook.

amtool can test routes but not inhibitions, so this starts Debian's Alertmanager with the shipped
configuration (only the webhook's address, the token file and the two group timers changed, so the
test does not wait minutes), posts alerts through its API, and reads back which ones are inhibited
and what a stand-in webhook on 127.0.0.1 received.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.helpers.requirements import binary
from vmhealth.stack.launcher import Child
from vmhealth.stack.processes import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "alertmanager-to-webhook-token"


class Receiver(ThreadingHTTPServer):
    """Records every POST it gets: (path, Authorization header, JSON body)."""

    def __init__(self, port: int):
        self.received: list[tuple[str, str, dict[str, Any]]] = []
        super().__init__(("127.0.0.1", port), ReceiverHandler)


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.server.received.append((self.path, self.headers.get("Authorization", ""), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(free_port())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[str]:
    """The URL of a running Alertmanager with the shipped configuration."""
    path = binary("alertmanager")
    config = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())
    (tmp_path / "token").write_text(TOKEN + "\n")
    (route,) = [r for r in config["route"]["routes"] if r["receiver"] == "vmhealth-webhook"]
    route.update(group_wait="1s", group_interval="2s")
    (hook,) = next(r for r in config["receivers"] if r["name"] == "vmhealth-webhook")["webhook_configs"]
    hook["url"] = f"http://127.0.0.1:{receiver.server_address[1]}/alerts"
    hook["http_config"]["authorization"]["credentials_file"] = str(tmp_path / "token")
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    alertmanager = Child("Alertmanager", [
        path, f"--config.file={tmp_path / 'alertmanager.yml'}", f"--storage.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn",
    ], tmp_path / "alertmanager.log", f"{url}/-/ready", stop_timeout=10)
    with alertmanager.started(30):
        yield url


def alert(name: str, severity: str, ends: datetime | None = None, **labels: str) -> dict[str, Any]:
    body: dict[str, Any] = {"labels": {"alertname": name, "severity": severity, **labels},
                            "annotations": {"summary": name}}
    if ends is not None:
        body["endsAt"] = ends.isoformat()
    return body


def hung(cluster: str, vmid: str, node: str, ends: datetime | None = None) -> dict[str, Any]:
    return alert("VMHung", "critical", ends, action="reset", cluster=cluster, vmid=vmid, node=node)


def test_inhibitions_and_webhook_delivery(alertmanager: str, receiver: Receiver) -> None:
    alerts = [
        hung("lab", "100", "pve1"),                               # reaches the webhook
        alert("VMHeartbeatStale", "warning", cluster="lab", vmid="100", node="pve1"),  # muted by VMHung 100
        alert("VMHeartbeatStale", "warning", cluster="lab", vmid="102", node="pve1"),  # nothing mutes it
        alert("ProxmoxNodeDown", "critical", cluster="lab", node="pve2"),
        hung("lab", "101", "pve2"),                               # its node is down
        alert("VMHighCPU", "warning", cluster="lab", vmid="103", node="pve2"),         # its node is down
        alert("VMHealthMassHeartbeatLoss", "critical", cluster="dc2"),
        hung("dc2", "200", "pve1"),                               # mass loss in dc2
        alert("ProxmoxAPIDown", "critical", cluster="dc3"),
        hung("dc3", "300", "pve1"),                               # dc3's API is down
        hung("dc4", "400", "pve1"),                               # other clusters' trouble does not mute it
    ]
    assert requests.post(f"{alertmanager}/api/v2/alerts", json=alerts, timeout=5).status_code == 200

    def states() -> dict[tuple[str, str], str] | None:
        got = requests.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
        if len(got) < len(alerts):
            return None
        return {(a["labels"]["alertname"], a["labels"].get("vmid") or a["labels"]["cluster"]):
                ("inhibited" if a["status"]["inhibitedBy"] else a["status"]["state"]) for a in got}

    expected = {
        ("VMHung", "100"): "active", ("VMHeartbeatStale", "100"): "inhibited",
        ("VMHeartbeatStale", "102"): "active", ("ProxmoxNodeDown", "lab"): "active",
        ("VMHung", "101"): "inhibited", ("VMHighCPU", "103"): "inhibited",
        ("VMHealthMassHeartbeatLoss", "dc2"): "active", ("VMHung", "200"): "inhibited",
        ("ProxmoxAPIDown", "dc3"): "active", ("VMHung", "300"): "inhibited", ("VMHung", "400"): "active",
    }
    wait_for(lambda: states() == expected, 20, f"the alert states {expected}, last seen {states()}")

    # The webhook gets one notification per guest, only for the VMHung alerts nothing inhibits.
    wait_for(lambda: len(receiver.received) >= 2, 20, "two webhook notifications")
    time.sleep(3)  # past group_wait and group_interval: nothing else may arrive
    by_vm = {tuple(sorted(body["groupLabels"].items())): (path, auth, body) for path, auth, body in receiver.received}
    assert set(by_vm) == {(("cluster", "lab"), ("vmid", "100")), (("cluster", "dc4"), ("vmid", "400"))}
    for path, auth, body in receiver.received:
        assert path == "/alerts"
        assert auth == f"Bearer {TOKEN}"
        assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "vmhealth-webhook"
        assert [a["labels"]["alertname"] for a in body["alerts"]] == ["VMHung"]

    # send_resolved: the end of the incident reaches the webhook too.
    before = len(receiver.received)
    ended = datetime.now(UTC) - timedelta(seconds=1)
    assert requests.post(f"{alertmanager}/api/v2/alerts", json=[hung("lab", "100", "pve1", ended)],
                         timeout=5).status_code == 200
    resolved = wait_for(lambda: [b for _, _, b in receiver.received[before:] if b["status"] == "resolved"], 20,
                        "the resolved notification")
    assert resolved[0]["groupLabels"] == {"cluster": "lab", "vmid": "100"}
    assert resolved[0]["alerts"][0]["status"] == "resolved"
