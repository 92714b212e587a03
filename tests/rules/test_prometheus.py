"""The shipped prometheus.yml and rules in a real Prometheus, scraping a real `vmhealth exporter`.

The Proxmox simulator stands in for the cluster; the exporter polls it and receives heartbeats over
HTTP; Prometheus (Debian's binary) scrapes the exporter with the example configuration (only the
target address, the intervals and the rule file paths changed) and evaluates the rules. With a 3s
stale timeout in the vmhealth config, a guest that stops reporting becomes hung within seconds;
VMHung itself shows up as pending (its `for: 3m` is not waited out here, promtool covers it).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.helpers.requirements import binary
from vmhealth.simulator.testing import RunningSimulator, running_simulator
from vmhealth.stack.launcher import Child, clean_env
from vmhealth.stack.processes import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "prometheus-e2e-agent-key"


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(nodes=2, guests=3) as running:
        yield running


@pytest.fixture
def exporter(sim: RunningSimulator, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    config = {
        "clusters": [sim.cluster_config(role="audit")],
        "thresholds": {"stale_timeout": "3s", "io_window": "2s"},
        "exporter": {"listen": f"127.0.0.1:{port}", "poll_interval": "1s", "api_key": API_KEY, "per_vm_keys": False,
                     "database_url": f"sqlite:///{tmp_path}/exporter.db", "threads": 2},
    }
    (tmp_path / "vmhealth.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"
    # the test run's own VMHEALTH_* switches are not configuration for the program under test
    exporter = Child("the exporter", [sys.executable, "-m", "vmhealth.cli", "exporter", "--config",
                                      str(tmp_path / "vmhealth.yml")], tmp_path / "exporter.log", f"{url}/readyz",
                     clean_env(), stop_timeout=10)
    with exporter.started(60):
        yield url


@pytest.fixture
def prometheus(exporter: str, tmp_path: Path) -> Iterator[str]:
    path = binary("prometheus")
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(ROOT / "prometheus" / rule) for rule in config["rule_files"]]
    config.pop("alerting")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["vmhealth-exporter"]["static_configs"] = [{"targets": [exporter.removeprefix("http://")]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "agents-lab.yml").write_text((ROOT / "prometheus" / "sd" / "agents.example.yml").read_text())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    prometheus = Child("Prometheus", [path, f"--config.file={tmp_path / 'prometheus.yml'}",
                                      f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{port}"],
                       tmp_path / "prometheus.log", f"{url}/-/ready", clean_env(), stop_timeout=10)
    with prometheus.started(60):
        yield url


def query(prometheus: str, expr: str) -> dict[tuple[str, ...], float]:
    reply = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert reply["status"] == "success", reply
    return {tuple(f"{k}={v}" for k, v in sorted(item["metric"].items()) if k != "__name__"): float(item["value"][1])
            for item in reply["data"]["result"]}


def heartbeat(exporter: str, vmid: int) -> None:
    body = {"hostname": f"guest-{vmid}", "vmid": str(vmid), "status": "running", "cpuUsage": 12.5, "ramUsage": 1024,
            "ramTotal": 4096, "diskUsage": 20000, "diskTotal": 100000, "uptime": 600, "timestamp": 0}
    reply = requests.post(f"{exporter}/api/health/report", json=body, headers={"X-API-Key": API_KEY}, timeout=5)
    assert reply.status_code == 200, reply.text


def test_rules_in_prometheus(sim: RunningSimulator, exporter: str, prometheus: str) -> None:
    nodes = {vmid: sim.guest(vmid)["node"] for vmid in (100, 101, 102)}
    heartbeat(exporter, 101)  # then frozen: silent, stale after 3s, I/O-idle after 2s, and hung
    sim.hang(101)

    def health() -> dict[tuple[str, ...], float] | None:
        heartbeat(exporter, 100)  # keeps reporting
        got = query(prometheus, "cluster_vmid:vmhealth_guest_health:state")
        want = {("cluster=sim", f"health={h}", f"node={nodes[v]}", f"vmid={v}"): 1.0
                for v, h in ((100, "healthy"), (101, "down"), (102, "down"))}
        return got if got == want else None

    wait_for(health, 60, "the rules' health of each guest")
    hung = query(prometheus, "cluster_vmid:vmhealth_guest_hung:bool")
    assert hung == {("cluster=sim", f"node={nodes[100]}", "vmid=100"): 0.0,
                    ("cluster=sim", f"node={nodes[101]}", "vmid=101"): 1.0}
    # The two rules may turn pending one evaluation apart: wait until both alert names are there.
    def pending() -> dict[tuple[str, ...], float] | None:
        found = query(prometheus, 'ALERTS{alertname=~"VMHung|VMAgentMissing"}')
        names = {label for key in found for label in key if label.startswith("alertname=")}
        return found if names == {"alertname=VMHung", "alertname=VMAgentMissing"} else None

    alerts = wait_for(pending, 30, "pending alerts")
    assert alerts == {
        ("action=reset", "alertname=VMHung", "alertstate=pending", "cluster=sim", f"node={nodes[101]}",
         "severity=critical", "vmid=101"): 1.0,
        ("alertname=VMAgentMissing", "alertstate=pending", "cluster=sim", f"node={nodes[102]}",
         "severity=warning", "vmid=102"): 1.0,
    }
    # the threshold series the rules compare against come from the vmhealth config
    assert query(prometheus, "cluster:vmhealth_config_stale_timeout_seconds:max") == {("cluster=sim",): 3.0}


def test_agents_from_file_discovery(prometheus: str) -> None:
    """The example file-SD list, copied as sd/agents-lab.yml, becomes pull-mode agent targets."""

    def agents() -> list[dict[str, Any]]:
        targets = requests.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return [t for t in targets if t["labels"]["job"] == "vmhealth-agent"]

    found = wait_for(lambda: len(agents()) == 3 and agents(), 30, "three agent targets")
    assert sorted((t["labels"]["instance"], t["labels"]["vmid"], t["scrapeUrl"]) for t in found) == [
        ("lab/100", "100", "http://192.0.2.10:9748/metrics"),
        ("lab/101", "101", "http://192.0.2.11:9748/metrics"),
        ("lab/102", "102", "http://[2001:db8::12]:9748/metrics"),
    ]
