"""A runtime pause with the real webhook processes: `vmhealth remediation` pauses through one replica,
another replica on the same database refuses the alert, and resuming lets the next repeat act."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from tests.helpers.servers import ADMIN_TOKEN, bearer, forged, send, serve, webhook_config
from vmhealth.simulator.testing import running_simulator
from vmhealth.stack.processes import wait_for


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmhealth", "remediation", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60)


def outcomes(url: str, vmid: int) -> list[str]:
    rows = requests.get(f"{url}/api/resets", params={"vmid": vmid}, timeout=10,
                        headers=bearer(ADMIN_TOKEN)).json()["resets"]
    return [row["outcome"] for row in rows]


def test_a_pause_through_one_replica_holds_every_replica_until_resumed(tmp_path: Path) -> None:
    with running_simulator(nodes=1, guests=4, task_seconds=0.1) as sim:  # guests 100..103
        sim.set_guest_agent(101, "none")
        sim.hang(101)
        first, second = tmp_path / "a", tmp_path / "b"
        first.mkdir(), second.mkdir()
        shared = webhook_config(sim, tmp_path, retry_interval="1s", cooldown="1s")
        with serve("webhook", shared, first) as one, serve("webhook", shared, second) as other:
            config = first / "webhook.yml"
            refused = cli(config, "pause")
            assert refused.returncode == 2 and "--reason" in refused.stdout
            wrong = cli(config, "pause", "--cluster", "elsewhere", "--reason", "x")
            assert wrong.returncode == 1 and "'elsewhere' is not configured" in wrong.stdout
            paused = cli(config, "pause", "--reason", "storage maintenance", "--actor", "ann")
            assert paused.returncode == 0 and "paused" in paused.stdout, paused.stdout + paused.stderr
            status = cli(second / "webhook.yml", "status", "--url", other.url)
            assert "every cluster paused" in status.stdout and "manual:ann: storage maintenance" in status.stdout

            send(other, forged([101], tag="pause"))
            wait_for(lambda: "skipped:remediation-paused" in outcomes(other.url, 101), 30, "the paused refusal")
            assert sim.resets(101) == []
            assert "vmhealth_remediation_paused_since_seconds{scope=\"*\"}" in requests.get(
                f"{other.url}/metrics", timeout=10).text

            resumed = cli(config, "resume", "--reason", "done", "--actor", "ann")
            assert resumed.returncode == 0 and "resumed" in resumed.stdout
            assert cli(config, "resume").returncode == 1  # nothing left to resume
            assert "nothing paused" in cli(config, "status").stdout
            wait_for(lambda: (send(other, forged([101], tag="pause")), len(sim.resets(101)) == 1)[1], 30,
                     "the next repeat to reset the guest")
            rows = requests.get(f"{one.url}/api/resets", params={"outcome": "paused"}, timeout=10,
                                headers=bearer(ADMIN_TOKEN)).json()["resets"]
            assert rows[0]["actor"] == "manual:ann" and "storage maintenance" in rows[0]["reason"]
