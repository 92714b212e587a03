"""prometheus-pve-exporter (the real one, from PyPI) completes a full default scrape against the
simulator: every collector, cluster and node, no error, and the series it is known for."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from vmhealth.simulator.testing import RunningSimulator, running_simulator
from vmhealth.stack.launcher import Child

pytestmark = pytest.mark.slow


@pytest.fixture
def pve_exporter(tmp_path: Path, port: int) -> Iterator[tuple[RunningSimulator, str]]:
    """The simulator and a running pve_exporter configured with the simulator's token and CA file."""
    command = shutil.which("pve_exporter") or str(Path(sys.executable).with_name("pve_exporter"))
    if not Path(command).exists():
        pytest.skip("prometheus-pve-exporter is not installed (pip install -e '.[test]')")
    with running_simulator(nodes=3, guests=12, lxc=3, templates=1) as sim:
        user, _, token_name = sim.token_id.partition("!")
        config = tmp_path / "pve.yml"
        config.write_text(yaml.safe_dump({"default": {
            "user": user, "token_name": token_name, "token_value": sim.token_secret, "verify_ssl": sim.ca_bundle,
        }}))
        url = f"http://127.0.0.1:{port}"
        pve = Child("pve_exporter", [command, "--config.file", str(config),
                                     "--web.listen-address", f"127.0.0.1:{port}"],
                    tmp_path / "pve_exporter.log", stop_timeout=10)
        with pve.started():
            pve.wait_until(lambda: _answers(f"{url}/metrics"), 30, "pve_exporter to listen", 0.1)
            yield sim, url


def _answers(url: str) -> bool:
    """Any answer: it listens (what it answers is for the tests to check)."""
    try:
        requests.get(url, timeout=2)
        return True
    except requests.ConnectionError:
        return False


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def test_full_default_scrape(pve_exporter: tuple[RunningSimulator, str]) -> None:
    sim, url = pve_exporter
    sim.lock(101, "backup")
    sim.node_offline("pve3")
    sim.clear_requests()
    response = requests.get(f"{url}/pve", params={"target": sim.host, "cluster": "1", "node": "1"}, timeout=60)
    assert response.status_code == 200, response.text
    got = samples(response.text)

    up = {labels["id"]: value for labels, value in got["pve_up"]}
    assert up["qemu/100"] == 1 and up["qemu/115"] == 0  # the template is stopped
    assert up["node/pve1"] == 1 and up["node/pve3"] == 0 and up["cluster/sim"] == 1
    assert up["storage/pve1/local"] == 1
    assert got["pve_version_info"][0][0]["release"] == "9.0"
    assert {labels["name"] for labels, _ in got["pve_node_info"]} == {"pve1", "pve2", "pve3"}
    assert got["pve_cluster_info"][0][0]["quorate"] == "1"
    guests = {labels["id"]: labels for labels, _ in got["pve_guest_info"]}
    assert len(guests) == 16 and guests["lxc/112"]["type"] == "lxc" and guests["qemu/115"]["template"] == "1"
    locks = {(labels["id"], labels["state"]) for labels, value in got["pve_lock_state"] if value == 1}
    assert locks == {("qemu/101", "backup")}
    assert got["pve_not_backed_up_total"][0][1] == 15
    onboot = {labels["id"] for labels, _ in got["pve_onboot_status"]}  # the local node's guests' configs
    assert onboot == {f"qemu/{v}" for v in (100, 103, 106, 109, 115)} | {"lxc/112"}
    assert {labels["status"] for labels, value in got["pve_subscription_status"] if value == 1} == {"notfound"}
    assert got["pve_cpu_usage_ratio"] and got["pve_memory_usage_bytes"] and got["pve_uptime_seconds"]

    counts = sim.request_counts(with_query=True)
    assert counts["GET /cluster/resources?type=vm"] == 1 and counts["GET /cluster/resources?type=storage"] == 1
    assert counts["GET /cluster/resources"] == 1
    assert counts["GET /cluster/backup-info/not-backed-up"] == 1 and counts["GET /cluster/config/qdevice"] == 1
    assert counts["GET /nodes/pve1/subscription"] == 1 and counts["GET /nodes/pve1/replication"] == 1
    assert counts["GET /cluster/status"] >= 5  # it re-reads the status for nearly every collector
    statuses = sim.requests(recent=0)["statuses"]
    assert set(statuses) == {"200"}, statuses
