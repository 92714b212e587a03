"""Forged alerts for guests that do not exist, then a real hung guest's alert: is it reset, and when?

    python bench/ghost_flood.py                   # 2,000 ghosts
    python bench/ghost_flood.py --ghosts 200      # quicker

`vmhealth webhook` (gunicorn, SQLite, the default policy: circuit breaker, rate limit and cooldowns on)
against the simulator (20 guests on 2 nodes, guest 105 hung, without a guest agent). One notification
carries `--ghosts` firing VMHung alerts for vmids 900001 and up, as the holder of a leaked Alertmanager
token would send them; then a second one carries guest 105's. Measured: how long the first POST took,
how long after its own alert the real guest's reset request reached the simulator, when every decision
was made, how many `/cluster/resources` reads the simulator served, and the incidents left open.
Before ghost incidents were closed, the ghosts kept the circuit breaker open and the real guest was
never reset.

Result: bench/results/ghost_flood.json and a line on stdout.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests
from common import parse_script_args, script_parser, write_result
from webhook_latency import TOKEN, notification, webhook

from vmhealth.simulator.testing import running_simulator
from vmhealth.stack.processes import wait_for

HUNG = 105
DEFAULT_POLICY = {"max_actions_per_hour": 10, "max_hung_fraction": 0.3, "circuit_min_hung": 2}


def post(url: str, body: dict) -> float:
    started = time.monotonic()
    reply = requests.post(f"{url}/alerts", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300)
    if reply.status_code != 200:
        raise RuntimeError(f"POST /alerts answered {reply.status_code}: {reply.text[:300]}")
    return time.monotonic() - started


def metric(url: str, prefix: str) -> list[str]:
    return [line for line in requests.get(f"{url}/metrics", timeout=30).text.splitlines() if line.startswith(prefix)]


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--ghosts", type=int, default=2000, help="forged alerts in the first notification (2000)")
    args = parse_script_args(parser)
    starts_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    with tempfile.TemporaryDirectory(prefix="vmhealth-ghosts-") as tmp, \
            running_simulator(nodes=2, guests=20, task_seconds=0.1) as sim:
        sim.set_guest_agent(HUNG, "none")
        sim.hang(HUNG)
        child, url = webhook(sim, Path(tmp), "webhook", DEFAULT_POLICY)
        with child:
            cluster = sim.cluster_config()["name"]
            sim.clear_requests()
            began = time.monotonic()
            flood_post = post(url, notification(cluster, list(range(900001, 900001 + args.ghosts)), starts_at))
            real_sent = time.monotonic()
            post(url, notification(cluster, [HUNG], starts_at))
            wait_for(lambda: sim.resets(HUNG), 600, f"guest {HUNG} to be reset", 0.1)
            reset_after = time.monotonic() - real_sent
            wait_for(lambda: "vmhealth_remediation_queue_depth 0.0" in metric(url, "vmhealth_remediation_queue"),
                     600, "every decision", 0.2)
            all_decided = time.monotonic() - began
            reads = sum(count for path, count in sim.request_counts().items() if "cluster/resources" in path)
            still_open = len(metric(url, "vmhealth_remediation_incident_attempts{"))
    data = {"ghosts": args.ghosts, "flood_post_s": round(flood_post, 2), "real_reset_after_s": round(reset_after, 1),
            "all_decided_s": round(all_decided, 1), "cluster_resources_reads": reads,
            "open_incidents_left": still_open}
    write_result("ghost_flood", data, args.out)
    print(f"{args.ghosts} ghost alerts answered in {flood_post:.2f} s; guest {HUNG} reset {reset_after:.1f} s "
          f"after its alert; every decision made {all_decided:.1f} s after the flood; {reads} /cluster/resources "
          f"read(s); {still_open} incident(s) left open")
    return 0


if __name__ == "__main__":
    sys.exit(main())
