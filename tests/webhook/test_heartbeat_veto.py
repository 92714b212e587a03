"""A leaked Alertmanager token cannot reset a guest that is reporting: just before acting, the webhook
reads the guest's heartbeat age from the exporter, and a fresh one refuses the reset
(`skipped:heartbeat-fresh`). The real `vmhealth exporter` and `vmhealth webhook` processes against the
simulator; the guest without a heartbeat is reset as before.

Cost: about 10 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers.servers import AGENT_KEY, Served, decisions, exporter_config, forged, send, serve, webhook_config
from vmhealth.simulator.testing import RunningSimulator, running_simulator
from vmhealth.stack.processes import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningSimulator, Served, Served]]:
    folder: Path = tmp_path_factory.mktemp("veto")
    with running_simulator(nodes=1, guests=20, task_seconds=0.1) as sim, \
            serve("exporter", exporter_config(sim, folder), folder) as exporter:
        config = webhook_config(sim, folder)
        config["webhook"]["exporter_urls"] = [exporter.url]
        with serve("webhook", config, folder) as webhook:
            yield sim, exporter, webhook


def outcomes(webhook: Served, vmid: int) -> list[str]:
    return [row["outcome"] for row in decisions(webhook) if row["vmid"] == vmid]


def test_a_forged_alert_for_a_reporting_guest_resets_nothing(stack: tuple[RunningSimulator, Served, Served]) -> None:
    sim, exporter, webhook = stack
    for vmid in (103, 104):  # no QEMU guest agent: before the veto, nothing else stood in the way
        sim.set_guest_agent(vmid, "none")
    report = {"vmid": "103", "cluster": sim.cluster_config()["name"], "hostname": "vm103", "cpuUsage": 2}
    reply = requests.post(f"{exporter.url}/api/health/report", json=report, headers={"X-API-Key": AGENT_KEY},
                          timeout=10)
    assert reply.status_code == 200, reply.text
    send(webhook, forged([103, 104]))
    wait_for(lambda: outcomes(webhook, 103) and outcomes(webhook, 104) not in ([], ["pending"]), 30,
             "decisions on both forged alerts")
    assert outcomes(webhook, 103) == ["skipped:heartbeat-fresh"]
    assert outcomes(webhook, 104) == ["success"]  # no heartbeat known: the alert stands, as before
    row: dict[str, Any] = next(r for r in decisions(webhook) if r["vmid"] == 103)
    assert row["evidence"]["heartbeat_source"] == "exporter" and 0 <= row["evidence"]["heartbeat_age"] < 30
    assert "the guest is reporting" in row["error"]
    assert sim.resets(103) == [] and len(sim.resets(104)) == 1
    assert "heartbeat age is read from the exporter(s) at" in webhook.output()
