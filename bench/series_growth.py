"""Series one guest can make in Prometheus: reports with new mountpoints and a new hostname each.

    python bench/series_growth.py                 # 30 reports, 64 new mountpoints each, one every 0.6 s
    python bench/series_growth.py --smoke         # 5 reports

One guest, with its own per-VM key, sends `--reports` heartbeats to `vmhealth exporter` (gunicorn, as
users run it; the simulator lists the guest), each with `--mountpoints` mountpoint names it never sent
before and a hostname it never sent before, while Debian's Prometheus scrapes the exporter every
`--scrape-interval`. Prometheus keeps every series it has seen, so what counts is its own index:
`/api/v1/series` over the run, for that guest (name and label set, distinct). The exporter's side:
reports accepted, values it left out (`vmhealth_report_values_dropped_total`), and the guest's last
heartbeat time in Prometheus (every heartbeat must still arrive). Goal: at most 50 series.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from common import exporter_child, parse_script_args, prometheus_child, save_result, script_parser

from vmhealth.keys import derive_vm_key
from vmhealth.simulator.testing import running_simulator
from vmhealth.stack.processes import free_port, wait_for

API_KEY = "bench-series-agent-key"
VMID = 101
GOAL_SERIES = 50


def report(i: int, mountpoints: int) -> dict[str, Any]:
    """The original agent's fields, a new hostname and `mountpoints` mountpoint names never sent before."""
    return {"hostname": f"churn-{i}.example.org", "vmid": str(VMID), "cpuUsage": 12.5, "ramUsage": 2048,
            "ramTotal": 4096, "diskUsage": 10240, "diskTotal": 40960, "uptime": 1000 + i,
            "disks": [{"mountpoint": f"/churn/{i}/{j}", "usedBytes": j, "totalBytes": 2**30}
                      for j in range(mountpoints)]}


def prometheus_series(url: str, match: str, start: float) -> list[dict[str, str]]:
    reply = requests.get(f"{url}/api/v1/series", params={"match[]": match, "start": start, "end": time.time()},
                         timeout=10).json()
    return reply["data"]


def prometheus_value(url: str, expr: str) -> float | None:
    result = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def exporter_counters(url: str) -> dict[str, float]:
    """The report counters of the exporter's page: `result=accepted` -> n, `reason=label_rate` -> n, ..."""
    out = {}
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(("vmhealth_reports_total{", "vmhealth_report_values_dropped_total{")):
            out[line[line.index("{") + 1:line.index("}")].replace('"', "")] = float(line.rsplit(" ", 1)[1])
    return out


def run(reports: int, mountpoints: int, pause: float, scrape_interval: float) -> dict[str, Any]:
    exporter_port, prometheus_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="vmhealth-bench-") as folder, \
            running_simulator(nodes=1, guests=3, subprocess=True) as sim:
        workdir = Path(folder)
        cluster = sim.cluster_config(role="audit")
        key = derive_vm_key(API_KEY, cluster["name"], VMID)
        exporter_url = f"http://127.0.0.1:{exporter_port}"
        prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        with exporter_child(workdir, exporter_port, cluster, API_KEY, per_vm_keys=True) as exporter, \
                prometheus_child(workdir, prometheus_port, f"127.0.0.1:{exporter_port}", scrape_interval) as prom:
            wait_for(lambda: prometheus_value(prometheus_url, 'up{job="vmhealth-exporter"}') == 1, 60,
                     "Prometheus' first scrape", 0.5)
            started = time.time()
            statuses: Counter[int] = Counter()
            for i in range(reports):
                if i:
                    time.sleep(pause)
                reply = requests.post(f"{exporter_url}/api/health/report", json=report(i, mountpoints),
                                      headers={"X-API-Key": key}, timeout=10)
                statuses[reply.status_code] += 1
            last_report = time.time()
            # two more scrapes, so that Prometheus has seen whatever the last report made
            time.sleep(2 * scrape_interval + 0.5)
            exporter.alive()
            prom.alive()
            match = f'{{vmid="{VMID}",cluster="{cluster["name"]}"}}'
            found = prometheus_series(prometheus_url, match, started - 60)
            heartbeat = prometheus_value(prometheus_url, f"vmhealth_heartbeat_timestamp_seconds{match}")
            counters = exporter_counters(exporter_url)
    names = Counter(s["__name__"] for s in found)
    return {"reports": reports, "mountpoints_per_report": mountpoints, "pause_s": pause,
            "scrape_interval_s": scrape_interval, "statuses": {str(k): v for k, v in statuses.items()},
            "series": len(found), "series_by_name": dict(sorted(names.items())),
            "hostnames": len({s["hostname"] for s in found if "hostname" in s}),
            "mountpoints": len({s["mountpoint"] for s in found if "mountpoint" in s}),
            # the guest's heartbeat time in Prometheus, minus when the last report was answered
            "last_heartbeat_lag_s": round(last_report - heartbeat, 3) if heartbeat else None,
            "exporter_counters": counters, "goal_series": GOAL_SERIES, "goal_met": len(found) <= GOAL_SERIES}


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--reports", type=int, default=30)
    parser.add_argument("--mountpoints", type=int, default=64, help="new mountpoint names per report")
    parser.add_argument("--pause", type=float, default=0.6, help="seconds between reports (default 0.6)")
    parser.add_argument("--scrape-interval", type=float, default=0.5, help="Prometheus' (default 0.5 s)")
    args = parse_script_args(parser, "5 reports", reports=5)
    result = run(args.reports, args.mountpoints, args.pause, args.scrape_interval)
    print(f"{args.reports} reports x {args.mountpoints} new mountpoints and a new hostname: "
          f"{result['series']} series in Prometheus for vmid {VMID} ({result['mountpoints']} mountpoints, "
          f"{result['hostnames']} hostnames; goal <= {GOAL_SERIES}); replies {result['statuses']}; "
          f"last heartbeat in Prometheus {result['last_heartbeat_lag_s']} s before the last reply", flush=True)
    print(f"exporter counters: {result['exporter_counters']}")
    save_result("series_growth", result, args)
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
