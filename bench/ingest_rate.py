"""Heartbeat ingest: vmhealth's exporter next to Prometheus Pushgateway, the standard way to push metrics.

    python bench/ingest_rate.py                     # 4, 8, 16, 32 connections, 8 s each, 1,000 guests
    python bench/ingest_rate.py --smoke             # seconds

The same load generator (bench/loadgen.py: keep-alive connections, closed loop, one asyncio loop)
runs on the same machine as the server, at the same concurrency, alternately against:
- `vmhealth exporter` (gunicorn, as users run it; the simulator gives it a Proxmox snapshot of the
  guests so every report is for a known guest): `POST /api/health/report` with the original agent's
  JSON payload, one guest after another;
- `prometheus-pushgateway` (Debian's, persistence off): `POST /metrics/job/vmhealth/instance/<vmid>`
  with the same information as a small text-format body (heartbeat time, CPU, memory, disk, uptime,
  hostname and node).
Reports/s counts 2xx answers; latency is request written to answer read, per request.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import exporter_child, parse_script_args, ratio, save_result, script_parser, start_child, summary
from loadgen import build_request, run_load
from pyspy import Profiler

from vmhealth.keys import derive_vm_key
from vmhealth.simulator.testing import running_simulator
from vmhealth.stack.binaries import require_binary
from vmhealth.stack.processes import free_port

API_KEY = "bench-agent-shared-key"
FIRST_VMID = 100


def report(vmid: int, node: str, now: float) -> dict[str, Any]:
    """What the original agent sends."""
    return {"hostname": f"guest-{vmid}.example.org", "vmid": str(vmid), "node": node, "status": "running",
            "cpuUsage": 12.5, "ramUsage": 2048, "ramTotal": 4096, "diskUsage": 10240, "diskTotal": 40960,
            "uptime": 123456, "timestamp": int(now)}


def pushgateway_body(vmid: int, node: str, now: float) -> bytes:
    """The same information in the text format, as a Pushgateway client would push it."""
    r = report(vmid, node, now)
    return (f"vmhealth_heartbeat_timestamp_seconds {now:.3f}\n"
            f"vmhealth_guest_cpu_usage_ratio {r['cpuUsage'] / 100}\n"
            f"vmhealth_guest_memory_used_bytes {r['ramUsage'] * 2**20}\n"
            f"vmhealth_guest_memory_total_bytes {r['ramTotal'] * 2**20}\n"
            f"vmhealth_guest_disk_used_bytes {r['diskUsage'] * 2**20}\n"
            f"vmhealth_guest_disk_total_bytes {r['diskTotal'] * 2**20}\n"
            f"vmhealth_guest_uptime_seconds {r['uptime']}\n"
            f'vmhealth_guest_info{{hostname="{r["hostname"]}",node="{node}"}} 1\n').encode()


def requests_for(target: str, guests: int, nodes: int, cluster: str = "sim") -> list[bytes]:
    """One prebuilt request per guest, each with the guest's own key (the heartbeat time is the
    receiver's, so they can be reused)."""
    now = time.time()
    out = []
    for i in range(guests):
        vmid, node = FIRST_VMID + i, f"pve{i % nodes + 1}"
        if target == "vmhealth":
            out.append(build_request("POST", "/api/health/report", json.dumps(report(vmid, node, now)).encode(),
                                     {"Content-Type": "application/json",
                                      "X-API-Key": derive_vm_key(API_KEY, cluster, vmid)}))
        else:
            out.append(build_request("POST", f"/metrics/job/vmhealth/instance/{vmid}",
                                     pushgateway_body(vmid, node, now), {"Content-Type": "text/plain"}))
    return out


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--connections", default="4,8,16,32", help="concurrency levels (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=8.0, help="per level and target (default 8)")
    parser.add_argument("--guests", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="py-spy the exporter at the highest concurrency")
    args = parse_script_args(parser, "a few seconds: 4 connections, 1 s",
                             connections="4", seconds=1.0, guests=20, nodes=2)
    levels = [int(x) for x in args.connections.split(",")]
    ours_port, push_port = free_port(), free_port()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vmhealth-bench-") as folder, \
            running_simulator(nodes=args.nodes, guests=args.guests, subprocess=True, start_timeout=120) as sim:
        workdir = Path(folder)
        with exporter_child(workdir, ours_port, sim.cluster_config(role="audit"), API_KEY) as ours, \
                start_child("pushgateway", [require_binary("prometheus-pushgateway"),
                                            f"--web.listen-address=127.0.0.1:{push_port}", "--persistence.file=",
                                            "--log.level=warn"], workdir,
                            f"http://127.0.0.1:{push_port}/-/ready", 30) as push:
            targets = {"vmhealth": (ours_port, requests_for("vmhealth", args.guests, args.nodes)),
                       "pushgateway": (push_port, requests_for("pushgateway", args.guests, args.nodes))}
            for port, prebuilt in targets.values():  # warm-up: every guest once
                run_load(port, lambda n, p=prebuilt: p[n % len(p)], 4, min(2.0, args.seconds))
            for level in levels:
                for name, (port, prebuilt) in targets.items():
                    with ExitStack() as profiling:
                        if args.profile and name == "vmhealth" and level == levels[-1]:
                            profiling.enter_context(Profiler(ours.pid, "ingest_vmhealth", (
                                f"vmhealth exporter under the ingest benchmark, {level} connections")))
                        result = run_load(port, lambda n, p=prebuilt: p[n % len(p)], level, args.seconds)
                    ours.alive()
                    push.alive()
                    row = {"target": name, "connections": level, "ok": result.ok, "failed": result.failed,
                           "statuses": result.statuses, "seconds": result.seconds, "rate": result.rate,
                           **summary(result.latencies or [0.0]), "first_error": result.first_error}
                    rows.append(row)
                    print(f"{name:12} {level:3} connections {result.rate:8.0f} reports/s  p50 {row['median_ms']:6.1f}"
                          f" ms  p99 {row['p99_ms']:7.1f} ms  failed {result.failed}", flush=True)
    for level in levels:
        ours_row = next(r for r in rows if r["target"] == "vmhealth" and r["connections"] == level)
        push_row = next(r for r in rows if r["target"] == "pushgateway" and r["connections"] == level)
        ours_row["vs_pushgateway"] = ratio(ours_row["rate"], push_row["rate"])
    best = max((r for r in rows if r["target"] == "vmhealth" and r["p99_ms"] < 50), key=lambda r: r["rate"],
               default=None)
    result = {"guests": args.guests, "rows": rows,
              "best_under_50ms_p99": best and {"connections": best["connections"], "rate": best["rate"],
                                                "guests_at_30s": int(best["rate"] * 30)}}
    save_result("ingest_rate", result, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
