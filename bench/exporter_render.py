"""How long the exporter takes to build /metrics for N guests, all with heartbeats (in-process).

    python bench/exporter_render.py --guests 10000 --repeat 20

Prints the median and p95 render time and the page size per guest. It measures the exporter's own
work only; the side-by-side comparison with prometheus-pve-exporter over HTTP is a separate script.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from vmhealth.config import load
from vmhealth.exporter.exposition import render
from vmhealth.exporter.poller import snapshot_from
from vmhealth.exporter.state import Heartbeat, Store


def build(guests: int, nodes: int) -> tuple[Store, object]:
    config = load(raw={"clusters": [{"name": "bench", "host": "h", "token_id": "a@pve!b", "token_secret": "s"}],
                       "exporter": {"api_key": "k", "database_url": f"sqlite:///{tempfile.mkdtemp()}/x.db"}},
                  environ={})
    resources = [{"type": "qemu", "vmid": 100 + i, "node": f"pve{i % nodes}", "name": f"guest-{i}",
                  "status": "running", "tags": "web;prod"} for i in range(guests)]
    status = [{"type": "node", "name": f"pve{n}", "online": 1} for n in range(nodes)]
    store = Store(config.clusters, None, 100)
    store.apply_snapshot("bench", snapshot_from(resources, status, time.time()), 0.1)
    now = time.time()
    for i in range(guests):
        store.record("bench", 100 + i, Heartbeat(received=now, hostname=f"guest-{i}.example.org", cpu_ratio=0.25,
                                                 mem_used=2 << 30, mem_total=4 << 30, disk_used=10 << 30,
                                                 disk_total=40 << 30, uptime=123456.0))
    return store, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guests", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    store, config = build(args.guests, args.nodes)
    times, size = [], 0
    for _ in range(args.repeat):
        started = time.perf_counter()
        clusters, heartbeats = store.view()
        page = render(clusters, heartbeats, config, {"accepted": 1})
        times.append(time.perf_counter() - started)
        size = len(page.encode())
    times.sort()
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    series = page.count("\n") - 2 * page.count("# TYPE")
    print(f"guests={args.guests} median={statistics.median(times) * 1000:.1f}ms p95={p95 * 1000:.1f}ms "
          f"bytes={size} bytes_per_guest={size / args.guests:.0f} series={series}")


if __name__ == "__main__":
    main()
