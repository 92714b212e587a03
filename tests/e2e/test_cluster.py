"""End to end, highly available: two Alertmanager peers gossiping on loopback (cluster mode), both
receiving Prometheus' alerts and both notifying two webhook replicas that share one PostgreSQL. Every
replica hears of the hung guest; the database lets exactly one reset through."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.e2e import (
    am_alerts,
    describe,
    history,
    latency_bound,
    settled,
    tasks_since,
    wait_for_reset,
    whole_stack,
)
from vmhealth.stack.processes import wait_for
from vmhealth.stack.running import VIEWER_TOKEN, Stack

pytestmark = [pytest.mark.binaries, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def stack(tmp_path: Path, postgres_url: str) -> Iterator[Stack]:
    with whole_stack(tmp_path, nodes=2, guests=8, webhook_replicas=2, alertmanager_peers=2,
                     database_url=postgres_url) as running:
        yield running


def firing_notifications(webhook_url: str) -> float:
    """Firing alerts a webhook replica received, whatever it made of them (recorded or duplicate)."""
    text = requests.get(f"{webhook_url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name == "vmhealth_webhook_notifications"
               for sample in family.samples
               if sample.name.endswith("_total") and sample.labels.get("status") == "firing")


def peers(alertmanager_url: str) -> list[dict]:
    status = requests.get(f"{alertmanager_url}/api/v2/status", timeout=10).json()
    return status["cluster"].get("peers") or []


def test_two_alertmanager_peers_and_two_webhook_replicas_reset_once(stack: Stack) -> None:
    assert len(stack.alertmanager_urls) == 2 and len(stack.webhook_urls) == 2
    wait_for(lambda: all(len(peers(url)) == 2 for url in stack.alertmanager_urls), 60,
             "both Alertmanager peers to see each other")
    settled(stack)
    vmid, start = 103, time.time()
    stack.sim.hang(vmid)
    bound, formula = latency_bound(stack)
    task = wait_for_reset(stack, vmid, start, bound + 30)
    print(f"\nguest {vmid}: hang -> reset request {task['requested_at'] - start:.1f}s (bound {formula})")

    for url in stack.alertmanager_urls:  # Prometheus sends to both peers
        assert any(a["labels"].get("vmid") == str(vmid) for a in am_alerts(url, "VMHung")), url
    # Each Alertmanager notification goes to both replicas, so both recorded the alert and raced for it.
    wait_for(lambda: all(firing_notifications(url) >= 1 for url in stack.webhook_urls), 30,
             "both webhook replicas to receive the alert")
    wait_for(lambda: history(stack, vmid, "resolved"), 90, f"the incident of guest {vmid} to be resolved")

    [done] = tasks_since(stack, start)
    assert (done["upid"], done["exitstatus"]) == (task["upid"], "OK"), describe(stack)
    successes = history(stack, vmid, "success")
    assert [r["upid"] for r in successes] == [task["upid"]], describe(stack)
    second = requests.get(f"{stack.webhook_urls[1]}/api/resets", params={"vmid": vmid}, timeout=10,
                          headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}).json()["resets"]
    assert [r["id"] for r in second] == [r["id"] for r in history(stack, vmid)]  # one shared history
    print("firing notifications per replica:", [firing_notifications(url) for url in stack.webhook_urls])
