"""The Prometheus rules and the exporter's GET /api/vms agree on every guest's health.

One scenario: the Proxmox simulator (a real HTTPS server) with guests that are healthy, above each
threshold, hung (silent and I/O-idle), locked, paused, stopped, ignored, never reporting, on an
offline node, and one guest Proxmox does not list. The exporter polls it and receives heartbeats;
its clock is set to small numbers because `time()` starts at 0 in `promtool test rules`. Its
/metrics page becomes the input series of a promtool test whose expectations are the exporter's own
/api/vms answer.
"""

from __future__ import annotations

import json
import subprocess
import time as real_time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from vmhealth.config import load
from vmhealth.simulator.testing import RunningSimulator, running_simulator

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = [ROOT / "prometheus" / "rules" / name for name in ("vmhealth-recording.yml", "vmhealth-alerts.yml")]
API_KEY = "crosscheck-shared-agent-key"
STALE_AT, FRESH_AT, NOW = 100, 1000, 1100  # seconds; the stale timeout is 300
GUESTS = 17  # vmids 100-116, the last one a container


class Clock:
    """Stands in for the `time` module inside the exporter: `time()` is set by the test."""

    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(real_time, name)


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(nodes=3, guests=GUESTS - 1, lxc=1, task_seconds=0.2) as running:
        yield running


def report(vmid: int, cpu: float = 20, ram: float = 40, disk: float = 40, node: str | None = None) -> dict[str, Any]:
    """The original agent payload; ram and disk as percentages of 4096 MB and 100000 MB."""
    body: dict[str, Any] = {
        "hostname": f"guest-{vmid}", "vmid": str(vmid), "status": "running", "cpuUsage": cpu,
        "ramUsage": 4096 * ram / 100, "ramTotal": 4096, "diskUsage": 100000 * disk / 100, "diskTotal": 100000,
        "uptime": 3600, "timestamp": 0,
    }
    if node:
        body["node"] = node
    return body


def scenario(sim: RunningSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict], str, dict]:
    """Run the exporter through the scenario; (its /api/vms rows, its /metrics page, the roles)."""
    from vmhealth.exporter import api as api_module
    from vmhealth.exporter import ingest_view as ingest_module
    from vmhealth.exporter import poller as poller_module
    from vmhealth.exporter.app import create_app

    guests = {vmid: sim.guest(vmid) for vmid in range(100, 100 + GUESTS)}
    qemu = [v for v, g in guests.items() if g["type"] == "qemu" and g["node"] != "pve3"]
    roles = dict(zip(["healthy", "cpu", "ram", "disk", "hung", "locked", "paused", "stopped", "ignored", "never"],
                     qemu, strict=False))
    roles["offline_node"] = next(v for v, g in guests.items() if g["type"] == "qemu" and g["node"] == "pve3")
    roles["lxc_hung"] = next(v for v, g in guests.items() if g["type"] == "lxc" and g["node"] != "pve3")
    roles["unlisted"] = 999
    assert len(roles) == 13, f"the simulator's guests do not fit the scenario: {guests}"

    config = load(raw={
        "clusters": [sim.cluster_config(role="audit")],
        # thresholds below the defaults, to show the rules follow the config
        "thresholds": {"cpu_percent": 70, "ram_percent": 85, "disk_percent": 90, "stale_timeout": "5m"},
        "exporter": {"api_key": API_KEY, "per_vm_keys": False, "database_url": f"sqlite:///{tmp_path}/exporter.db"},
    }, components=("exporter",), environ={})
    clock = Clock(50)
    monkeypatch.setattr(ingest_module, "time", clock)
    monkeypatch.setattr(api_module, "time", clock)
    monkeypatch.setattr(poller_module, "time", clock)
    app = create_app(config, start=False)
    exporter = app.extensions["vmhealth"]
    client = app.test_client()
    try:
        assert exporter.poll_all() is None and exporter.guests.clusters[sim.cluster_name].up

        def post(body: dict[str, Any]) -> None:
            reply = client.post("/api/health/report", json=body, headers={"X-API-Key": API_KEY})
            assert reply.status_code == 200, reply.json

        clock.now = STALE_AT
        for role in ("hung", "locked", "paused", "stopped", "ignored", "offline_node", "lxc_hung"):
            post(report(roles[role]))
        sim.lock(roles["locked"])
        sim.pause(roles["paused"])
        sim.stop_guest(roles["stopped"])
        sim.set_tags(roles["ignored"], "vmhealth-ignore")
        sim.node_offline("pve3")
        sim.hang(roles["hung"])
        sim.hang(roles["lxc_hung"])
        clock.now = FRESH_AT - 10  # a poll that starts the hung guests' idle spell (io_window is 60s)
        exporter.poll_all()
        clock.now = FRESH_AT
        post(report(roles["healthy"]))
        post(report(roles["cpu"], cpu=75))
        post(report(roles["ram"], ram=88))
        post(report(roles["disk"], disk=95))
        post(report(roles["unlisted"], node="pve1"))
        clock.now = NOW
        exporter.poll_all()
        rows = client.get("/api/vms").json
        page = client.get("/metrics").get_data(as_text=True)
    finally:
        exporter.archive.close()
        sim.heal()
    return rows, page, roles


def selector(name: str, labels: dict[str, str]) -> str:
    """`name{label="value",...}` as promtool reads it (Go string escapes match JSON's)."""
    inner = ",".join(f"{key}={json.dumps(val)}" for key, val in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def promtool_case(page: str, rows: list[dict]) -> dict[str, Any]:
    """A promtool test: the /metrics page as constant input series, /api/vms as the expected results."""
    samples = NOW // 60 + 2  # one a minute, until past NOW
    inputs = [{"series": selector(sample.name, sample.labels), "values": f"{sample.value!r}x{samples}"}
              for family in text_string_to_metric_families(page) for sample in family.samples]
    guest = [{"cluster": r["cluster"], "node": r["node"], "vmid": r["vmid"]} for r in rows]
    health = [{"labels": selector("cluster_vmid:vmhealth_guest_health:state", dict(g, health=r["health"])), "value": 1}
              for g, r in zip(guest, rows, strict=True)]
    hung = [{"labels": selector("cluster_vmid:vmhealth_guest_hung:bool", g), "value": 1}
            for g, r in zip(guest, rows, strict=True) if r["hung"]]
    counts = Counter((r["cluster"], r["health"]) for r in rows)
    hung_counts = Counter(r["cluster"] for r in rows if r["hung"])
    clusters = {r["cluster"] for r in rows}
    count_samples = [{"labels": f'cluster:vmhealth_guests:count{{cluster="{c}",health="{h}"}}', "value": counts[c, h]}
                     for c in clusters for h in ("healthy", "warning", "down")]
    count_samples += [{"labels": f'cluster:vmhealth_guests_hung:count{{cluster="{c}"}}', "value": hung_counts[c]}
                      for c in clusters]
    at = f"{NOW}s"
    return {
        "rule_files": [str(path) for path in RULE_FILES],
        "evaluation_interval": "1m",
        "group_eval_order": ["vmhealth-recording", "vmhealth-alerts"],
        "tests": [{
            "name": "rules agree with /api/vms",
            "interval": "1m",
            "input_series": inputs,
            "promql_expr_test": [
                {"expr": "cluster_vmid:vmhealth_guest_health:state", "eval_time": at, "exp_samples": health},
                {"expr": "cluster_vmid:vmhealth_guest_hung:bool == 1", "eval_time": at, "exp_samples": hung},
                {"expr": "cluster:vmhealth_guests:count or cluster:vmhealth_guests_hung:count", "eval_time": at,
                 "exp_samples": count_samples},
            ],
        }],
    }


def test_rules_and_api_vms_agree(sim: RunningSimulator, promtool: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    rows, page, roles = scenario(sim, tmp_path, monkeypatch)
    by_vmid = {int(r["vmid"]): r for r in rows}

    # The scenario is what it claims to be, as the exporter sees it ...
    expected = {"healthy": ("healthy", False), "cpu": ("warning", False), "ram": ("warning", False),
                "disk": ("warning", False), "hung": ("down", True), "lxc_hung": ("down", True),
                "locked": ("down", False), "paused": ("down", False), "stopped": ("down", False),
                "ignored": ("down", False), "never": ("down", False), "offline_node": ("down", False),
                "unlisted": ("healthy", False)}
    seen = {role: (by_vmid[vmid]["health"], by_vmid[vmid]["hung"]) for role, vmid in roles.items()}
    assert seen == expected
    assert len(rows) == GUESTS + 1  # the listed guests (some without a role) and the unlisted one
    assert 'vmhealth_pve_guest_paused{' in page and 'vmhealth_pve_guest_locked{' in page

    # ... and the rules, fed the exporter's /metrics, say the same about every guest.
    result = run_promtool(promtool, tmp_path, promtool_case(page, rows))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]

    # A disagreement would be caught: claim the hung guest is healthy and promtool objects.
    wrong = [dict(r, health="healthy", hung=False) if int(r["vmid"]) == roles["hung"] else r for r in rows]
    result = run_promtool(promtool, tmp_path, promtool_case(page, wrong))
    assert result.returncode != 0
    assert f'vmid="{roles["hung"]}"' in result.stdout + result.stderr


def run_promtool(promtool: str, folder: Path, case: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    (folder / "crosscheck.yml").write_text(yaml.safe_dump(case, sort_keys=False))
    return subprocess.run([promtool, "test", "rules", "crosscheck.yml"], cwd=folder, capture_output=True,
                          text=True, timeout=120, check=False)
