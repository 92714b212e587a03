"""One hostile address against the exporter and the webhook: how long everyone else waits.

    python bench/slow_clients.py                  # 20 s per condition, 200 connections
    python bench/slow_clients.py --seconds 5      # quicker
    python bench/slow_clients.py --smoke          # seconds

`vmhealth exporter` and `vmhealth webhook` (gunicorn, default threads and limits, as users run them)
against the simulator. For each server, three conditions one after the other: quiet; 127.0.0.2 holding
200 connections that send a request line and then one byte every 2 s (slowloris), reopening any that
are cut; 127.0.0.2 holding 200 connections that send nothing. Meanwhile 127.0.0.1 sends, twice a
second, what the legitimate clients send: a heartbeat (exporter) or an Alertmanager notification
(webhook), a scrape of /metrics and a /healthz probe, and times each answer. The goal: every answer
within 2 s under either flood (`bench/hostile_clients.py` drives the floods). The flood's p99 is also
given as a ratio to the quiet p99 of the same run.

Result: bench/results/slow_clients.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from common import exporter_child, ratio, script_parser, summary, write_result
from hostile_clients import ConnectionFlood
from webhook_latency import TOKEN, notification, webhook

from vmhealth.keys import derive_vm_key
from vmhealth.simulator.testing import running_simulator
from vmhealth.stack.processes import free_port, wait_for

AGENT_KEY = "bench-slow-clients-key"
GOAL_SECONDS = 2.0
CONDITIONS = ("quiet", "trickle", "idle")


def timed(call: Any) -> float:
    started = time.perf_counter()
    reply = call()
    elapsed = time.perf_counter() - started
    if reply.status_code != 200:
        raise RuntimeError(f"{reply.request.url} answered {reply.status_code}: {reply.text[:200]}")
    return elapsed


def probes(target: str, url: str, cluster: str, vmid: int) -> dict[str, Any]:
    """The legitimate requests of one server, each a function returning its reply."""
    if target == "exporter":
        report = {"hostname": f"vm{vmid}", "vmid": str(vmid), "cluster": cluster, "cpuUsage": 1}
        main = lambda: requests.post(f"{url}/api/health/report", json=report,  # noqa: E731
                                     headers={"X-API-Key": derive_vm_key(AGENT_KEY, cluster, vmid)}, timeout=60)
    else:
        body = notification(cluster, [vmid], "2026-01-01T00:00:00Z")
        body["status"] = "resolved"
        for alert in body["alerts"]:
            alert["status"], alert["endsAt"] = "resolved", "2026-01-01T00:05:00Z"
        main = lambda: requests.post(f"{url}/alerts", json=body,  # noqa: E731
                                     headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    return {"heartbeat" if target == "exporter" else "alerts": main,
            "metrics": lambda: requests.get(f"{url}/metrics", timeout=60),
            "healthz": lambda: requests.get(f"{url}/healthz", timeout=60)}


def measure(target: str, url: str, cluster: str, vmid: int, condition: str, args: argparse.Namespace) -> dict:
    calls = probes(target, url, cluster, vmid)
    flood = None
    if condition != "quiet":
        flood = ConnectionFlood("127.0.0.1", int(url.rsplit(":", 1)[1]), source="127.0.0.2",
                                connections=args.connections, mode=condition)
        flood.start()
        wait_for(lambda: flood.counts.opened >= args.connections, 30, "the flood to open its connections")
    waits: dict[str, list[float]] = {name: [] for name in calls}
    try:
        until = time.monotonic() + args.seconds
        while time.monotonic() < until:
            for name, call in calls.items():
                waits[name].append(timed(call))
            time.sleep(0.5)
    finally:
        if flood is not None:
            flood.stop()
    row: dict[str, Any] = {"target": target, "condition": condition,
                           "requests": {name: summary(values) | {"max_ms": 1000 * max(values)}
                                        for name, values in waits.items()}}
    every = [w for values in waits.values() for w in values]
    row["max_ms"] = 1000 * max(every)
    if flood is not None:
        row["flood"] = {"opened": flood.counts.opened, "cut": flood.counts.cut, "failed": flood.counts.failed}
    return row


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="probing time per condition (default 20)")
    parser.add_argument("--connections", type=int, default=200, help="hostile connections (default 200)")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results)")
    parser.add_argument("--smoke", action="store_true", help="a few seconds: 20 connections, 1 s per condition")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.connections = 1.0, 20
    rows = []
    with tempfile.TemporaryDirectory(prefix="vmhealth-slow-clients-") as tmp, \
            running_simulator(nodes=1, guests=20) as sim:
        workdir = Path(tmp)
        cluster = sim.cluster_config()
        port = free_port()
        with exporter_child(workdir, port, cluster, AGENT_KEY) as _exporter:
            for condition in CONDITIONS:
                rows.append(measure("exporter", f"http://127.0.0.1:{port}", cluster["name"], 101, condition, args))
        child, url = webhook(sim, workdir, "webhook", {})
        with child:
            for condition in CONDITIONS:
                rows.append(measure("webhook", url, cluster["name"], 101, condition, args))
    for row in rows:
        quiet = next(r for r in rows if r["target"] == row["target"] and r["condition"] == "quiet")
        row["p99_ratio_to_quiet"] = {name: ratio(stats["p99_ms"], quiet["requests"][name]["p99_ms"])
                                     for name, stats in row["requests"].items()}
    verdict = all(r["max_ms"] <= 1000 * GOAL_SECONDS for r in rows)
    name = "slow_clients_smoke" if args.smoke else "slow_clients"
    write_result(name, {"goal_seconds": GOAL_SECONDS, "connections": args.connections, "seconds": args.seconds,
                        "rows": rows, "goal_met": verdict}, args.out)
    print("| server | 127.0.0.2 holds | request | median ms | p99 ms | max ms | p99 / quiet |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        held = "nothing" if row["condition"] == "quiet" else f"{args.connections} {row['condition']} connections"
        for name, stats in row["requests"].items():
            print(f"| {row['target']} | {held} | {name} | {stats['median_ms']:.1f} | {stats['p99_ms']:.1f} | "
                  f"{stats['max_ms']:.1f} | {row['p99_ratio_to_quiet'][name]:.2f} |")
    print(f"\nevery answer within {GOAL_SECONDS:g} s: {'yes' if verdict else 'NO'}")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
