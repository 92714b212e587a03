"""A leaked Alertmanager token, with the default policy: forged alerts cannot reset more guests than
the limits docs/security.md states. Flooding more than 30% of a cluster's guests at once opens the
circuit breaker (no reset at all); staying under it, the attacker gets at most
`max_actions_per_hour` (10) resets per hour and one per guest until its cooldown passes; and a guest
whose QEMU guest agent answers is not reset at all.

Cost: about 15 s (`vmhealth webhook` as a real process, a 60-guest simulator).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers.servers import ADMIN_TOKEN, WEBHOOK_TOKEN, Served, decisions, forged, send, serve
from vmhealth.config import load
from vmhealth.simulator.testing import RunningSimulator, running_simulator
from vmhealth.stack.processes import wait_for

pytestmark = pytest.mark.slow
GUESTS = 60






@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningSimulator, Served]]:
    folder: Path = tmp_path_factory.mktemp("leak")
    with running_simulator(nodes=3, guests=GUESTS, task_seconds=0.1) as sim:
        config = {"clusters": [sim.cluster_config(role="power")],
                  "webhook": {"token": WEBHOOK_TOKEN, "admin_token": ADMIN_TOKEN,
                              "database_url": f"sqlite:///{folder}/webhook.db"}}  # the default policy
        with serve("webhook", config, folder) as webhook:
            yield sim, webhook






def settled(webhook: Served, guests: list[int], outcomes: set[str]) -> bool:
    """Every guest has a decision with one of `outcomes` and the queue is empty."""
    page = requests.get(f"{webhook.url}/metrics", timeout=10).text
    decided = {r["vmid"] for r in decisions(webhook) if r["outcome"] in outcomes}
    return "vmhealth_remediation_queue_depth 0.0" in page and decided >= set(guests)


def test_the_default_policy_matches_the_documented_numbers() -> None:
    policy = load(raw={}, environ={}).webhook.policy
    assert (policy.max_actions_per_hour, policy.max_attempts, policy.cooldown, policy.max_hung_fraction,
            policy.circuit_min_hung, policy.boot_grace) == (10, 3, 600, 0.3, 2, 180)


def test_forged_alerts_stay_within_the_limits(stack: tuple[RunningSimulator, Served]) -> None:
    sim, webhook = stack
    # 1. One notification naming 25 of 60 guests (42%): the breaker opens, nothing is reset.
    many = list(range(100, 125))
    send(webhook, forged(many))
    wait_for(lambda: settled(webhook, many, {"skipped:circuit-open"}), 60, "the decisions on 25 forged alerts")
    assert {r["outcome"] for r in decisions(webhook)} == {"skipped:circuit-open"}
    assert sim.resets() == []
    send(webhook, forged(many, status="resolved"))
    wait_for(lambda: settled(webhook, many, {"resolved"}), 60, "the forged alerts to resolve")

    # 2. Guests with a QEMU guest agent answer its ping: forged alerts for them reset nothing.
    pinged = list(range(130, 135))
    send(webhook, forged(pinged, tag="ga"))
    wait_for(lambda: settled(webhook, pinged, {"skipped:guest-agent-alive"}), 60, "the decisions on 5 forged alerts")
    assert sim.resets() == []
    send(webhook, forged(pinged, status="resolved", tag="ga"))
    wait_for(lambda: settled(webhook, pinged, {"resolved"}), 60, "those forged alerts to resolve")

    # 3. Under the breaker, for guests without a guest agent (the ping is no evidence): 15 guests (25%),
    # sent again and again with fresh fingerprints.
    few = list(range(100, 115))
    for vmid in few:
        sim.set_guest_agent(vmid, "none")
    for round_ in range(4):
        send(webhook, forged(few, tag=f"r{round_}-{uuid.uuid4().hex[:6]}"))
    wait_for(lambda: settled(webhook, few, {"success", "skipped:rate-limited"}), 90, "the decisions on the flood")
    resets = sim.resets()
    per_guest = {vmid: sum(1 for r in resets if r["vmid"] == vmid) for vmid in few}
    assert len(resets) == 10, f"{len(resets)} resets, the hourly limit is 10: {resets}"
    assert max(per_guest.values()) == 1, per_guest
    outcomes = [r["outcome"] for r in decisions(webhook)]
    assert outcomes.count("success") == 10 and "skipped:rate-limited" in outcomes
