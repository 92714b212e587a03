"""How long the exporter takes to build /metrics for N guests, all with heartbeats (in-process).

    python bench/exporter_render.py --guests 10000 --repeat 20 --changed 0.5

Prints the median and p95 time of: a page formatted from nothing; a gzip scrape of the kept page
when `--changed` of the guests reported since the last scrape (a 15 s scrape with agents every 30 s:
0.5); the same when the exporter's background step already formatted all but the last second's
reports. It measures the exporter's own work only; bench/scrape_cost.py compares over HTTP.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable

from vmhealth.config import load
from vmhealth.exporter.exposition import Page, render
from vmhealth.exporter.poller import snapshot_from
from vmhealth.exporter.state import GuestState, Heartbeat


def build(guests: int, nodes: int) -> tuple[GuestState, object]:
    config = load(raw={"clusters": [{"name": "bench", "host": "h", "token_id": "a@pve!b", "token_secret": "s"}],
                       "exporter": {"api_key": "bench-render-agent-key", "database_url": f"sqlite:///{tempfile.mkdtemp()}/x.db"}},
                  environ={})
    resources = [{"type": "qemu", "vmid": 100 + i, "node": f"pve{i % nodes}", "name": f"guest-{i}",
                  "status": "running", "tags": "web;prod"} for i in range(guests)]
    status = [{"type": "node", "name": f"pve{n}", "online": 1} for n in range(nodes)]
    store = GuestState(config.clusters, None, 100)
    store.apply_snapshot("bench", snapshot_from(resources, status, time.time()), 0.1)
    now = time.time()
    for i in range(guests):
        store.record("bench", 100 + i, Heartbeat(received=now, hostname=f"guest-{i}.example.org", cpu_ratio=0.25,
                                                 mem_used=2 << 30, mem_total=4 << 30, disk_used=10 << 30,
                                                 disk_total=40 << 30, uptime=123456.0))
    return store, config


def report(store: GuestState, vmids: list[int], now: float) -> None:
    for vmid in vmids:
        store.record("bench", vmid, Heartbeat(received=now, hostname=f"guest-{vmid}.example.org",
                                              cpu_ratio=random.random(), mem_used=2 << 30, mem_total=4 << 30,
                                              disk_used=10 << 30, disk_total=40 << 30, uptime=now - 1e9))


def timed(repeat: int, before: Callable[[], None], work: Callable[[], object]) -> list[float]:
    times = []
    for _ in range(repeat):
        before()
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guests", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--changed", type=float, default=0.5, help="share of guests reporting between scrapes")
    args = parser.parse_args()
    store, config = build(args.guests, args.nodes)
    vmids = [100 + i for i in range(args.guests)]
    page = Page(config.exporter, config.thresholds)
    changed = max(1, int(args.changed * args.guests))

    def scrape() -> bytes:
        clusters, heartbeats, keys, names = store.page_view()
        return page.render_gzip(clusters, heartbeats, {"accepted": 1}, keys, names)

    def change_all() -> None:
        report(store, random.sample(vmids, changed), time.time())

    def change_absorbed() -> None:  # the background step took all but the last second (1/15 of a 15 s scrape)
        last = max(1, changed // 15)
        report(store, random.sample(vmids, changed - last), time.time())
        page.absorb(store)
        report(store, random.sample(vmids, last), time.time())

    def fresh() -> str:
        clusters, heartbeats = store.view()
        return render(clusters, heartbeats, config.exporter, config.thresholds, {"accepted": 1})

    size = len(fresh().encode())
    scrape()
    rows = {"from nothing": timed(args.repeat, lambda: None, fresh),
            f"kept page, {changed} guests changed": timed(args.repeat, change_all, scrape),
            f"kept page, {max(1, changed // 15)} not yet absorbed": timed(args.repeat, change_absorbed, scrape)}
    print(f"guests={args.guests} bytes_per_guest={size / args.guests:.0f} gzip_bytes_per_guest="
          f"{len(scrape()) / args.guests:.0f}")
    for name, times in rows.items():
        p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
        print(f"{name:40} median {statistics.median(times) * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
