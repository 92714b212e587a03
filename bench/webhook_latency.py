"""Webhook: alert received -> Proxmox reset call, and a 1,000-alert notification recorded and decided.

    python bench/webhook_latency.py                 # 50 single-alert notifications, then 1,000 alerts twice
    python bench/webhook_latency.py --smoke         # seconds
    python bench/webhook_latency.py --alerts 3 --bulk-modes "kill switch"   # the kill-switch bulk only

`vmhealth webhook` (gunicorn, SQLite, as users run it) against the simulator (a `vmhealth sim`
process). Latency: one VMHung notification at a time, each for another guest; from the moment the
POST is sent to the moment the simulator received `POST .../status/reset` (its task log keeps that to
the microsecond; same machine, same clock). Rate limits off (`max_actions_per_hour` huge, breaker
off, `boot_grace 0s`); every other policy check runs, including the live-state reads from Proxmox and
the ping of the guest's QEMU guest agent. Each guest is hung in the simulator first, as the alert says,
so that its guest agent does not answer (the simulator answers at once; Proxmox waits up to 3 s).

Bulk: one notification carrying `--bulk` firing alerts for as many guests: the time until the reply
(every alert durably recorded) and until every alert has its decision (the webhook's
`vmhealth_remediation_actions_total` counts them). Twice: with the kill switch (`enabled: false`:
decided without any Proxmox call) and in dry-run (every check including the Proxmox reads and the
guest-agent ping, which these healthy guests answer, no action).
"""

from __future__ import annotations

import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests
import yaml
from common import parse_script_args, save_result, script_parser, start_child, summary
from pyspy import Profiler

from vmhealth.simulator.testing import RunningSimulator, running_simulator
from vmhealth.stack.launcher import Child, vmhealth_command
from vmhealth.stack.processes import free_port, wait_for

TOKEN = "bench-webhook-token"
POLICY = {"boot_grace": "0s", "max_actions_per_hour": 1_000_000, "max_hung_fraction": 1.0,
          "circuit_min_hung": 1_000_000, "cooldown": "10m", "task_timeout": "30s"}


def notification(cluster: str, vmids: list[int], starts_at: str) -> dict[str, Any]:
    """An Alertmanager webhook (version 4) message with a firing VMHung alert per guest."""
    alerts = []
    for vmid in vmids:
        labels = {"alertname": "VMHung", "action": "reset", "severity": "critical", "vmid": str(vmid),
                  "cluster": cluster}
        alerts.append({"status": "firing", "labels": labels, "annotations": {"summary": "hung"},
                       "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
                       "generatorURL": "http://prometheus:9090", "fingerprint": f"{vmid:016x}"})
    return {"receiver": "vmhealth", "status": "firing", "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0,
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
            "alerts": alerts}


def webhook(sim: RunningSimulator, workdir: Path, name: str, policy: dict[str, Any]) -> tuple[Child, str]:
    port = free_port()
    config = {"clusters": [sim.cluster_config()],
              "webhook": {"listen": f"127.0.0.1:{port}", "token": TOKEN, "admin_token": TOKEN + "-admin",
                          "database_url": f"sqlite:///{workdir}/{name}.db", "policy": {**POLICY, **policy}}}
    path = workdir / f"{name}.yml"
    path.write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"
    return start_child(name, vmhealth_command("webhook", path, "--log-level", "warning"), workdir, f"{url}/healthz",
                       60), url


def decided(url: str) -> int:
    """Decisions the webhook counted so far (every result of vmhealth_remediation_actions_total)."""
    total = 0.0
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("vmhealth_remediation_actions_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def post(url: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    reply = requests.post(f"{url}/alerts", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
    if reply.status_code != 200:
        raise RuntimeError(f"POST /alerts answered {reply.status_code}: {reply.text[:300]}")
    return time.perf_counter() - started


def reset_latency(sim: RunningSimulator, url: str, vmids: list[int]) -> dict[str, Any]:
    latencies, replies = [], []
    for vmid in vmids:
        sim.hang(vmid)  # a healthy guest's guest agent answers, and the webhook rightly refuses
        sent = time.time()
        replies.append(post(url, notification(sim.cluster_name, [vmid], "2026-01-01T00:00:00Z")))
        task = wait_for(lambda v=vmid: sim.resets(v), 60, f"the reset of guest {vmid}", 0.01)[0]
        latencies.append(task["requested_at"] - sent)
    return {"alerts": len(vmids), "receive_to_reset": summary(latencies), "reply": summary(replies)}


def bulk(sim: RunningSimulator, url: str, vmids: list[int]) -> dict[str, Any]:
    before = decided(url)
    started = time.perf_counter()
    reply = post(url, notification(sim.cluster_name, vmids, "2026-01-01T00:00:00Z"))
    # Every 0.1 s: the webhook's /metrics reads every open incident, so asking more often would slow it.
    wait_for(lambda: decided(url) >= before + len(vmids), 300, f"decisions on {len(vmids)} alerts", 0.1)
    return {"alerts": len(vmids), "recorded_s": reply, "decided_s": time.perf_counter() - started}


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--alerts", type=int, default=50, help="single-alert notifications timed (default 50)")
    parser.add_argument("--bulk", type=int, default=1000, help="alerts in the bulk notification (default 1000)")
    parser.add_argument("--bulk-modes", default="kill switch,dry-run",
                        help="the bulk runs, comma-separated (default: 'kill switch,dry-run')")
    parser.add_argument("--profile", action="store_true", help="py-spy the webhook during the kill-switch bulk")
    args = parse_script_args(parser, "a few seconds: 3 alerts, a 20-alert notification", alerts=3, bulk=20)
    modes = {m.strip() for m in args.bulk_modes.split(",") if m.strip()}
    if not modes <= {"kill switch", "dry-run"}:
        parser.error(f"--bulk-modes: unknown {sorted(modes - {'kill switch', 'dry-run'})}")
    guests = args.alerts + args.bulk
    result: dict[str, Any] = {"policy": POLICY}
    with tempfile.TemporaryDirectory(prefix="vmhealth-bench-") as folder, \
            running_simulator(nodes=10, guests=guests, subprocess=True, boot_seconds=0.5, task_seconds=0.1,
                              start_timeout=120) as sim:
        workdir = Path(folder)
        child, url = webhook(sim, workdir, "webhook-act", {})
        with child:
            result["latency"] = reset_latency(sim, url, [100 + i for i in range(args.alerts)])
        bulk_vmids = [100 + args.alerts + i for i in range(args.bulk)]
        for mode, policy in (("kill switch", {"enabled": False}), ("dry-run", {"dry_run": True})):
            if mode not in modes:
                continue
            child, url = webhook(sim, workdir, f"webhook-{mode.replace(' ', '-')}", policy)
            with child, ExitStack() as profiling:
                if args.profile and mode == "kill switch":
                    profiling.enter_context(Profiler(child.pid, "webhook_bulk", (
                        f"vmhealth webhook recording and deciding one notification of {args.bulk} alerts "
                        "(kill switch: no Proxmox call)"), gil=False))
                sim.clear_requests()
                result.setdefault("bulk", []).append({"mode": mode, **bulk(sim, url, bulk_vmids),
                                                      "proxmox_calls": sum(sim.request_counts().values())})
    lat = result["latency"]["receive_to_reset"]
    print(f"receive -> reset: p50 {lat['median_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms over {lat['n']} alerts")
    for row in result.get("bulk", []):
        print(f"{row['alerts']} alerts ({row['mode']}): recorded in {row['recorded_s']:.2f} s, decided in "
              f"{row['decided_s']:.2f} s, {row['proxmox_calls']} Proxmox calls")
    save_result("webhook_latency", result, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
