"""Scrape cost: vmhealth's exporter next to prometheus-pve-exporter, both against the simulator.

    python bench/scrape_cost.py                       # 100, 1,000 and 10,000 guests, 20 scrapes each
    python bench/scrape_cost.py --smoke               # seconds: 20 guests, 3 scrapes

Per size, one `vmhealth sim` process (its simulated agents push a heartbeat for every guest to our
exporter every `--agent-interval`), one `vmhealth exporter` (gunicorn, as users run it) and one
`pve_exporter` (from PyPI) with the simulator's token. Scrapes alternate between the three targets:
ours (`/metrics`, `Accept-Encoding: gzip` as Prometheus sends it), pve-exporter cluster metrics only
(`/pve?cluster=1&node=0`) and its default (`/pve?cluster=1&node=1`). A scrape's time runs from the
request to the last byte, decompressed. Bytes and series per guest are of the uncompressed page
(pve-exporter does not compress). Proxmox API calls come from the simulator's request log: per
pve-exporter scrape, and for ours per poll, over a window with no scrapes and one with a scrape every
`--busy-pause` seconds (the same count: polling does not depend on scraping).
"""

from __future__ import annotations

import gzip
import http.client
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml
from common import exporter_child, parse_script_args, ratio, save_result, script_parser, start_child, summary
from pyspy import Profiler

from vmhealth.simulator.testing import RunningSimulator, running_simulator
from vmhealth.stack.launcher import Child
from vmhealth.stack.processes import free_port, wait_for

AGENT_KEY = "bench-agent-shared-key"


def fetch(port: int, path: str, gzip_ok: bool, timeout: float = 120) -> tuple[float, bytes, int]:
    """(seconds, uncompressed body, bytes on the wire) of one GET on a fresh connection, as Prometheus opens."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"} if gzip_ok else {})
        response = conn.getresponse()
        wire = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered {response.status}: {wire[:300]!r}")
        body = gzip.decompress(wire) if response.getheader("Content-Encoding") == "gzip" else wire
    finally:
        conn.close()
    return time.perf_counter() - started, body, len(wire)


def series(body: bytes) -> int:
    return sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))


def heartbeats(body: bytes) -> int:
    return body.count(b"\nvmhealth_heartbeat_timestamp_seconds{")


def pve_exporter(sim: RunningSimulator, workdir: Path, port: int) -> Child:
    user, _, token_name = sim.token_id.partition("!")
    config = workdir / "pve.yml"
    config.write_text(yaml.safe_dump({"default": {"user": user, "token_name": token_name,
                                                  "token_value": sim.token_secret, "verify_ssl": sim.ca_bundle}}))
    command = str(Path(sys.executable).with_name("pve_exporter"))
    return start_child("pve_exporter", [command, "--config.file", str(config), "--web.listen-address",
                                        f"127.0.0.1:{port}"], workdir, f"http://127.0.0.1:{port}/metrics")


def api_calls(sim: RunningSimulator) -> dict[str, int]:
    return {path: count for path, count in sim.request_counts().items() if not path.startswith("/_sim")}


def our_calls(sim: RunningSimulator, port: int, window: float, pause: float | None) -> dict[str, Any]:
    """Proxmox calls and polls of our exporter over `window` seconds, scraping every `pause` (None: never)."""
    sim.clear_requests()
    started, scrapes = time.monotonic(), 0
    while time.monotonic() - started < window:
        if pause is None:
            time.sleep(0.2)
            continue
        fetch(port, "/metrics", True)
        scrapes += 1
        time.sleep(pause)
    calls = api_calls(sim)
    polls = calls.get("GET /cluster/resources", 0)
    total = sum(calls.values())
    return {"window_s": window, "scrapes": scrapes, "polls": polls, "calls": total,
            "calls_per_poll": total / polls if polls else None}


def measure_size(guests: int, nodes: int, scrapes: int, agent_interval: float, poll_interval: float,
                 busy_pause: float, modes: list[str], profile: bool = False) -> dict[str, Any]:
    ours_port, pve_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="vmhealth-bench-") as folder, \
            running_simulator(nodes=nodes, guests=guests, subprocess=True, agents_to=f"http://127.0.0.1:{ours_port}",
                              agent_interval=agent_interval, agent_key=AGENT_KEY, start_timeout=120) as sim:
        workdir = Path(folder)
        with exporter_child(workdir, ours_port, sim.cluster_config(role="audit"), AGENT_KEY,
                            poll_interval=f"{poll_interval:g}s") as ours, pve_exporter(sim, workdir, pve_port) as pve:
            # Every guest has reported once before anything is measured.
            wait_for(lambda: ours.alive() and heartbeats(fetch(ours_port, "/metrics", True)[1]) >= guests,
                     agent_interval * 3 + 60, f"heartbeats of all {guests} guests")
            targets = {"vmhealth": (ours_port, "/metrics", True)}
            for mode in modes:
                node = "1" if mode == "default" else "0"
                targets[f"pve-exporter {mode}"] = (pve_port, f"/pve?target={sim.host}&cluster=1&node={node}", False)
            times: dict[str, list[float]] = {name: [] for name in targets}
            pages: dict[str, tuple[bytes, int]] = {}
            for name, (port, path, gz) in targets.items():  # warm-up, and one call count per pve scrape
                sim.clear_requests()
                _, body, wire = fetch(port, path, gz)
                pages[name] = (body, wire)
                if name != "vmhealth":
                    pages[name + " calls"] = (b"", sum(api_calls(sim).values()))
            with ExitStack() as profiling:
                if profile:
                    profiling.enter_context(Profiler(ours.pid, f"scrape_vmhealth_{guests}", (
                        f"vmhealth exporter during the scrape comparison, {guests} guests, agents every "
                        f"{agent_interval:g} s (ingest included: it is what the process does meanwhile)")))
                for _ in range(scrapes):
                    for name, (port, path, gz) in targets.items():
                        seconds, body, wire = fetch(port, path, gz)
                        times[name].append(seconds)
                        pages[name] = (body, wire)
            idle = our_calls(sim, ours_port, 2 * poll_interval, None)
            busy = our_calls(sim, ours_port, 2 * poll_interval, busy_pause)
            ours.alive()
            pve.alive()
    rows = []
    for name, values in times.items():
        body, wire = pages[name]
        row: dict[str, Any] = {"target": name, **summary(values), "bytes": len(body), "wire_bytes": wire,
                               "series": series(body), "bytes_per_guest": len(body) / guests,
                               "series_per_guest": series(body) / guests}
        if name == "vmhealth":
            row["api_calls"] = {"idle": idle, "scraping": busy}
        else:
            row["api_calls_per_scrape"] = pages[name + " calls"][1]
        rows.append(row)
    ours_row = rows[0]
    for row in rows[1:]:
        row["speedup"] = ratio(row["median_ms"], ours_row["median_ms"])
        row["bytes_ratio"] = ratio(row["bytes_per_guest"], ours_row["bytes_per_guest"])
    return {"guests": guests, "nodes": nodes, "agent_interval_s": agent_interval, "poll_interval_s": poll_interval,
            "rows": rows}


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--sizes", default="100:10,1000:20,10000:50", help="guests:nodes,... (default %(default)s)")
    parser.add_argument("--scrapes", type=int, default=20, help="scrapes per target and size (default 20)")
    parser.add_argument("--agent-interval", type=float, default=30.0, help="simulated agents' interval (30 s)")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="our exporter's poll interval (5 s)")
    parser.add_argument("--busy-pause", type=float, default=0.5, help="pause between scrapes of the busy window")
    parser.add_argument("--profile", action="store_true", help="py-spy our exporter at the largest size")
    args = parse_script_args(parser, "a few seconds: 20 guests, 3 scrapes",
                             sizes="20:2", scrapes=3, agent_interval=1.0, poll_interval=1.0)
    results = []
    sizes = args.sizes.split(",")
    for item in sizes:
        guests, _, nodes = item.partition(":")
        result = measure_size(int(guests), int(nodes or 10), args.scrapes, args.agent_interval, args.poll_interval,
                              args.busy_pause, ["cluster-only", "default"], args.profile and item == sizes[-1])
        results.append(result)
        for row in result["rows"]:
            print(f"{result['guests']:>6} guests {row['target']:28} median {row['median_ms']:9.1f} ms  "
                  f"p95 {row['p95_ms']:9.1f} ms  {row['bytes_per_guest']:7.0f} B/guest  "
                  f"{row['series_per_guest']:5.1f} series/guest", flush=True)
    save_result("scrape_cost", {"sizes": results}, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
