"""Memory before the first poll: forged guests sent while Proxmox cannot be reached.

    python bench/prepoll_memory.py                # 20,000 forged guests, 60 disks each
    python bench/prepoll_memory.py --smoke        # 500

`vmhealth exporter` (gunicorn, as users run it) starts with a cluster whose API address answers
nothing (a free loopback port), so every poll fails and the cluster is never read. With the shared
key (`exporter.per_vm_keys: false`, the opt-out that lets a guest speak for others; with per-VM
keys, the default, a guest has no other identity to forge), `--guests` reports, each for a
different vmid with `--disks` disks, are sent over 8 keep-alive connections (bench/loadgen.py).
Measured: the replies by status, the resident memory of the exporter's processes (psutil, the
gunicorn master and its worker) before and after, the size of /metrics, and the guests /api/vms
lists. Then the exporter is stopped (its last write-behind flush runs) and started again on the
same database: the rows in the database and the guests it lists before any report show what was
restored. Goal: at most 200 MB after the reports, nothing restored.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

import requests
from common import exporter_child, parse_script_args, save_result, script_parser, tree_rss
from loadgen import build_request, run_load

from vmhealth.stack.processes import free_port

API_KEY = "bench-prepoll-agent-key"
FIRST_VMID = 1000
GOAL_MB = 200


def forged(vmid: int, disks: int) -> bytes:
    body = {"hostname": f"forged-{vmid}", "vmid": str(vmid), "cpuUsage": 1, "ramUsage": 1, "ramTotal": 2,
            "disks": [{"mountpoint": f"/forged/{vmid}/{j}", "usedBytes": j, "totalBytes": 2**30}
                      for j in range(disks)]}
    return build_request("POST", "/api/health/report", json.dumps(body).encode(),
                         {"Content-Type": "application/json", "X-API-Key": API_KEY})


def snapshot(port: int, pid: int) -> dict[str, Any]:
    """The exporter's memory, page size and guests now."""
    page = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=60)
    guests = requests.get(f"http://127.0.0.1:{port}/api/vms", timeout=60).json()
    return {"rss_mb": round(tree_rss(pid) / 2**20, 1), "metrics_bytes": len(page.content), "guests": len(guests)}


def stored_rows(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        return connection.execute("select count(*) from exporter_guest_state").fetchone()[0]


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--guests", type=int, default=20_000, help="forged identities (default 20,000)")
    parser.add_argument("--disks", type=int, default=60, help="disks per report (default 60)")
    args = parse_script_args(parser, "500 guests", guests=500)
    unreachable = {"name": "lab", "host": f"127.0.0.1:{free_port()}", "token_id": "monitor@pve!vmhealth",
                   "token_secret": "not-used", "verify_ssl": False, "timeout": "2s"}
    with tempfile.TemporaryDirectory(prefix="vmhealth-bench-") as folder:
        workdir = Path(folder)
        port = free_port()
        with exporter_child(workdir, port, unreachable, API_KEY, per_vm_keys=False) as exporter:
            before = snapshot(port, exporter.pid)
            load = run_load(port, lambda n: forged(FIRST_VMID + n, args.disks), 8, 3600, count=args.guests)
            exporter.alive()
            after = snapshot(port, exporter.pid)
            down = requests.get(f"http://127.0.0.1:{port}/api/status", timeout=10).json()["clusters"]["lab"]
        rows = stored_rows(workdir / "exporter.db")
        with exporter_child(workdir, port, unreachable, API_KEY, per_vm_keys=False) as exporter:
            restarted = snapshot(port, exporter.pid)
    statuses = {str(k): v for k, v in sorted(load.statuses.items())}
    result = {"guests_sent": args.guests, "disks_per_report": args.disks, "statuses": statuses,
              "send_seconds": round(load.seconds, 1), "cluster_up": down["up"], "cluster_error": down["error"],
              "before": before, "after": after, "rows_stored_at_stop": rows, "after_restart": restarted,
              "goal_mb": GOAL_MB, "goal_met": after["rss_mb"] <= GOAL_MB and rows == 0 and restarted["guests"] == 0}
    print(f"{args.guests:,} forged guests x {args.disks} disks before the first poll: replies {statuses} in "
          f"{load.seconds:.1f} s; exporter RSS {before['rss_mb']} MB before, {after['rss_mb']} MB after "
          f"(goal <= {GOAL_MB}); /metrics {after['metrics_bytes']:,} bytes; {after['guests']} guests held",
          flush=True)
    print(f"stopped: {rows} rows in the database; restarted: {restarted['guests']} guests restored, "
          f"RSS {restarted['rss_mb']} MB")
    save_result("prepoll_memory", result, args)
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
