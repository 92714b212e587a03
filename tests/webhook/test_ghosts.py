"""No ghost incidents, with `vmhealth webhook` as a real process and the simulated cluster behind it:
forged alerts for guests Proxmox does not list close their incidents and cannot open the circuit
breaker for a real hung guest; one notification reads /cluster/resources once, however many alerts
it carries; a silent incident expires; a person closes one through the API and `vmhealth close-incident`.

Cost: about 15 s (two webhook processes, a 20-guest simulator).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers.servers import ADMIN_TOKEN, Served, bearer, decisions, forged, send, serve, webhook_config
from vmhealth.simulator.testing import RunningSimulator, running_simulator
from vmhealth.stack.processes import wait_for

pytestmark = pytest.mark.slow
GHOSTS = list(range(900001, 900007))  # the vmids of the security review's attack
RESOURCES = "GET /cluster/resources"


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(nodes=2, guests=20, task_seconds=0.1) as running:  # guests 100..119
        yield running


@pytest.fixture(scope="module")
def webhook(sim: RunningSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The default policy (breaker above 30% of 20 guests, at least 2 hung; incidents expire after 15m)."""
    folder: Path = tmp_path_factory.mktemp("ghosts")
    with serve("webhook", webhook_config(sim, folder), folder) as served:
        yield served


def rows_of(webhook: Served, vmid: int) -> list[dict[str, Any]]:
    return [r for r in decisions(webhook) if r["vmid"] == vmid]


def outcomes_of(webhook: Served, vmid: int) -> list[str]:
    return [r["outcome"] for r in reversed(rows_of(webhook, vmid))]


def queue_empty(webhook: Served) -> bool:
    return "vmhealth_remediation_queue_depth 0.0" in requests.get(f"{webhook.url}/metrics", timeout=10).text


def open_incidents(webhook: Served) -> set[int]:
    page = requests.get(f"{webhook.url}/metrics", timeout=10).text
    return {int(line.split('vmid="')[1].split('"')[0]) for line in page.splitlines()
            if line.startswith("vmhealth_remediation_incident_attempts{")}


def test_ghost_alerts_close_their_incidents_and_a_real_hung_guest_is_reset(sim: RunningSimulator,
                                                                           webhook: Served) -> None:
    # 1. The attack: six alerts for guests that do not exist, in one notification.
    sim.clear_requests()
    send(webhook, forged(GHOSTS, tag="ghost"))
    wait_for(lambda: queue_empty(webhook) and all("closed:not-found" in outcomes_of(webhook, v) for v in GHOSTS),
             60, "the ghosts' incidents to close")
    for vmid in GHOSTS:
        assert outcomes_of(webhook, vmid) == ["skipped:not-found", "closed:not-found"]
        closing = rows_of(webhook, vmid)[0]
        assert closing["actor"] == "webhook" and closing["incident"] is not None
        assert closing["reason"] == f"not-found: Proxmox lists no guest {vmid}"
    assert sim.request_counts().get(RESOURCES) == 1, sim.request_counts()
    assert open_incidents(webhook) == set()

    # 2. A real hung guest afterwards is reset, not refused as circuit-open.
    sim.hang(105)
    sim.clear_requests()
    send(webhook, forged([105], tag="real"))
    wait_for(lambda: sim.resets(105), 60, "the real guest's reset")
    wait_for(lambda: "success" in outcomes_of(webhook, 105), 30, "the reset's outcome")
    assert not any(o.startswith("skipped:") for o in outcomes_of(webhook, 105)), outcomes_of(webhook, 105)
    assert sim.request_counts().get(RESOURCES) == 1

    # 3. One notification of 200 ghosts and a real hung guest: one read of /cluster/resources for all.
    many = list(range(800000, 800200))
    sim.hang(106)
    sim.clear_requests()
    send(webhook, forged([*many, 106], tag="mixed"))
    wait_for(lambda: queue_empty(webhook) and sim.resets(106), 120, "the decisions on 201 alerts")
    wait_for(lambda: "success" in outcomes_of(webhook, 106), 30, "the reset's outcome")
    assert sim.request_counts().get(RESOURCES) == 1, sim.request_counts()
    assert open_incidents(webhook) == {105, 106}  # the real ones, waiting for their resolved notification
    assert len(sim.resets()) == 2


def test_a_person_closes_an_incident_through_the_api_and_the_cli(sim: RunningSimulator, webhook: Served) -> None:
    # Guests whose QEMU guest agent answers are not reset: their incidents stay open until closed.
    for vmid in (110, 111):
        send(webhook, forged([vmid], tag="close"))
    wait_for(lambda: {110, 111} <= open_incidents(webhook)
             and all("skipped:guest-agent-alive" in outcomes_of(webhook, v) for v in (110, 111)), 60, "two incidents")
    url = f"{webhook.url}/api/vms/110/close-incident"
    assert requests.post(url, json={"reason": "x"}, timeout=10).status_code == 401
    reply = requests.post(url, json={"actor": "ann", "reason": "stale, the alert rule was deleted"},
                          headers=bearer(ADMIN_TOKEN), timeout=10)
    assert reply.status_code == 200 and reply.json()["success"] is True, reply.text
    row = rows_of(webhook, 110)[0]
    assert (row["outcome"], row["actor"], row["reason"], row["incident"]) == (
        "closed:manual", "manual:ann", "manual: stale, the alert rule was deleted", reply.json()["incident"])
    again = requests.post(url, json={}, headers=bearer(ADMIN_TOKEN), timeout=10)
    assert again.status_code == 404 and "has no open incident" in again.json()["error"]
    assert requests.post(url, json={"reason": ""}, headers=bearer(ADMIN_TOKEN), timeout=10).status_code == 400

    config = str(webhook.log.with_name("webhook.yml"))
    done = subprocess.run([sys.executable, "-m", "vmhealth", "close-incident", "111", "--reason", "lost resolve",
                           "--actor", "bob", "--config", config], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Closed incident" in done.stdout, done.stdout + done.stderr
    row = rows_of(webhook, 111)[0]
    assert (row["outcome"], row["actor"], row["reason"]) == ("closed:manual", "manual:bob", "manual: lost resolve")
    missing = subprocess.run([sys.executable, "-m", "vmhealth", "close-incident", "111", "--reason", "again",
                              "--config", config], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "has no open incident" in missing.stdout
    assert not {110, 111} & open_incidents(webhook)


def test_an_incident_without_notifications_expires(sim: RunningSimulator, tmp_path: Path) -> None:
    """With incident_expiry 2s and the kill switch on (nothing acts, the incident just stays open)."""
    config = webhook_config(sim, tmp_path, enabled=False, incident_expiry="2s")
    with serve("webhook", config, tmp_path) as webhook:
        send(webhook, forged([112], tag="expiry"))
        wait_for(lambda: 112 in open_incidents(webhook), 30, "the incident")
        wait_for(lambda: "closed:expired" in outcomes_of(webhook, 112), 15, "the incident to expire")
        assert outcomes_of(webhook, 112) == ["skipped:disabled", "closed:expired"]
        row = rows_of(webhook, 112)[0]
        assert row["actor"] == "webhook" and row["incident"] is not None
        assert row["reason"].startswith("expired: no notification for ") and "incident_expiry is 2s" in row["reason"]
        assert open_incidents(webhook) == set()
