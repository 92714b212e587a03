"""Label injection and odd Unicode from every label source — the agent's hostname and node, Proxmox's
VM names, tags and node names, the cluster name — keep /metrics valid: `promtool check metrics`
passes and the real Prometheus ingests every series with the values read back exactly.

Cost: about 10 s (the exporter as a real process, a simulator, Prometheus).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.helpers.requirements import binary
from tests.helpers.servers import AGENT_KEY, Served, exporter_config, serve
from vmhealth.config import ConfigError, load
from vmhealth.simulator.testing import RunningSimulator, running_simulator
from vmhealth.stack.launcher import Child
from vmhealth.stack.processes import free_port, wait_for

pytestmark = [pytest.mark.binaries, pytest.mark.slow]
HOSTILE = ['quote"in', "back\\slash", "new\nline", "\\n literal", 'x",injected="1', "brace}{=,", "tab\there",
           "ünïcödé-主机-🖥", "\u202eright-to-left", "zero\u200bwidth", "del\x7f", "nul\x00byte", "a" * 255,
           "trailing\\"]
CLUSTER = "dc-1.eu_west"  # the most unusual name the configuration allows


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningSimulator, Served, str]]:
    folder: Path = tmp_path_factory.mktemp("labels")
    with running_simulator(nodes=1, guests=len(HOSTILE), cluster_name=CLUSTER) as sim:
        for i, value in enumerate(HOSTILE):  # Proxmox's side: names and tags as the API returns them
            guest = sim.simulator.cluster.guests[100 + i]
            guest.name = value
            guest.tags = f"ok;{value.replace(';', '')}"
        with serve("exporter", exporter_config(sim, folder), folder) as exporter:
            for i, value in enumerate(HOSTILE):  # the agent's side
                report = {"hostname": value, "node": value[:128], "vmid": str(100 + i), "cpuUsage": 1}
                reply = requests.post(f"{exporter.url}/api/health/report", json=report, timeout=10,
                                      headers={"X-API-Key": AGENT_KEY})
                assert reply.status_code == 200, reply.text
            wait_for(lambda: requests.get(f"{exporter.url}/readyz", timeout=5).status_code == 200, 30, "a poll")
            with prometheus(exporter, folder) as url:
                yield sim, exporter, url


def prometheus(exporter: Served, folder: Path) -> Any:
    from contextlib import contextmanager

    @contextmanager
    def run() -> Iterator[str]:
        config = {"global": {"scrape_interval": "1s"},
                  "scrape_configs": [{"job_name": "vmhealth-exporter",
                                      "static_configs": [{"targets": [exporter.url.removeprefix("http://")]}]}]}
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        with Child("Prometheus", [binary("prometheus"), f"--config.file={folder / 'prometheus.yml'}",
                                  f"--storage.tsdb.path={folder / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                   folder / "prometheus.log", stop_timeout=10).started():
            yield f"http://127.0.0.1:{port}"

    return run()


def series(prometheus_url: str, expr: str) -> list[dict[str, str]]:
    try:
        reply = requests.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=5).json()
    except requests.RequestException:
        return []
    return [item["metric"] for item in reply.get("data", {}).get("result", [])]


def test_the_page_passes_promtool(stack: tuple[RunningSimulator, Served, str]) -> None:
    _, exporter, _ = stack
    page = requests.get(f"{exporter.url}/metrics", timeout=10).text
    assert f'cluster="{CLUSTER}"' in page
    result = subprocess.run([binary("promtool"), "check", "metrics"], input=page.encode(), capture_output=True,
                            timeout=30)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_prometheus_ingests_every_value_exactly(stack: tuple[RunningSimulator, Served, str]) -> None:
    _, exporter, url = stack
    rows = requests.get(f"{exporter.url}/api/vms", timeout=10).json()
    tags = {int(row["vmid"]): ";".join(row["tags"]) for row in rows}
    infos = wait_for(lambda: len(s := series(url, "vmhealth_guest_info")) == len(HOSTILE) and s, 60,
                     "Prometheus to scrape every guest's info series")
    by_vmid = {int(m["vmid"]): m for m in infos}
    for i, value in enumerate(HOSTILE):
        labels = by_vmid[100 + i]
        assert labels["cluster"] == CLUSTER
        assert labels["name"] == value, (labels["name"], value)
        assert labels["hostname"] == value, (labels["hostname"], value)
        assert labels["tags"] == tags[100 + i] and "ok" in labels["tags"], (labels["tags"], tags[100 + i])
        assert "injected" not in labels
    heartbeats = series(url, "vmhealth_heartbeat_timestamp_seconds")
    assert len(heartbeats) == len(HOSTILE)
    up = series(url, 'up{job="vmhealth-exporter"} == 1')
    assert len(up) == 1, "the scrape succeeded"


@pytest.mark.parametrize("name", ['a"b', "a b", "new\nline", "lab\n", "ünï", "x}", ""])
def test_cluster_names_that_could_break_a_label_are_refused_by_name(name: str) -> None:
    raw = {"clusters": [{"name": name, "host": "pve:8006", "token_id": "a@pve!b", "token_secret": "s"}]}
    with pytest.raises(ConfigError) as caught:
        load(raw=raw, environ={})
    assert any(line.startswith("clusters[0].name") for line in caught.value.problems), caught.value.problems
