"""Resident memory and CPU per collection cycle of the agent (push and pull), next to node_exporter's.

    python3 bench/agent_footprint.py [--cycles 100] [--json]
    python3 bench/agent_footprint.py --smoke        # seconds: 5 cycles

Push: the agent reports every `--interval` to a small receiver in this process; CPU per cycle is the
agent's user+system CPU time over the accepted reports. It is measured twice: with one exporter,
and with two in `agent.exporter_urls` of which one is down (nothing listens; each report to it
fails and is retried with backoff), as a guest reporting to an exporter pair during an upgrade.
Pull: this process scrapes the agent's /metrics `--cycles` times; CPU per cycle is the agent's CPU
time per scrape. node_exporter (Debian's prometheus-node-exporter, when installed) is scraped the
same way. Each program runs alone, and the
first cycles (imports, first collection) are left out of the CPU figures; RSS is read at the end.
Results go to bench/results/agent_footprint.json (or `--out`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
from common import parse_script_args, script_parser, write_result

from vmhealth.stack.launcher import Child
from vmhealth.stack.processes import free_port

WARMUP = 3


class Receiver(ThreadingHTTPServer):
    """Counts accepted reports, standing in for the exporter's ingest."""

    daemon_threads = True

    def __init__(self) -> None:
        self.count = 0
        super().__init__(("127.0.0.1", 0), _Accept)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Accept(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.count += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def agent_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMHEALTH_")}
    return {**env, "VMHEALTH_AGENT_VMID": "100", **extra}


def measure_push(cycles: int, interval: float, logs: Path, one_down: bool = False) -> dict[str, Any]:
    receiver = Receiver()
    url = f"http://127.0.0.1:{receiver.server_address[1]}"
    urls = f"{url},http://127.0.0.1:{free_port()}" if one_down else url
    env = agent_env(VMHEALTH_AGENT_EXPORTER_URLS=urls,
                    VMHEALTH_AGENT_API_KEY="bench-footprint-agent-key", VMHEALTH_AGENT_INTERVAL=f"{interval}s",
                    VMHEALTH_AGENT_TIMEOUT=f"{interval * 0.8}s", VMHEALTH_AGENT_MODE="push")
    agent = Child("agent", [sys.executable, "-m", "vmhealth.agent", "--log-level", "warning"],
                  logs / f"agent-push{'-one-down' if one_down else ''}.log", env=env, stop_timeout=10)
    try:
        agent.start()
        ps = psutil.Process(agent.pid)
        deadline = time.monotonic() + (cycles + WARMUP) * interval * 3 + 60
        while receiver.count < WARMUP and time.monotonic() < deadline:
            time.sleep(0.05)
        start_cpu, start_count = cpu_seconds(ps), receiver.count
        while receiver.count < start_count + cycles and time.monotonic() < deadline:
            time.sleep(0.05)
        used, done = cpu_seconds(ps) - start_cpu, receiver.count - start_count
        rss = ps.memory_info().rss
    finally:
        agent.stop()
        receiver.shutdown()
        receiver.server_close()
    name = "vmhealth agent (push, 2 exporters, 1 down)" if one_down else "vmhealth agent (push)"
    return {"program": name, "rss_bytes": rss, "cycles": done,
            "cpu_ms_per_cycle": 1000 * used / max(done, 1)}


def measure_scrapes(name: str, command: list[str], url: str, cycles: int, logs: Path,
                    env: dict[str, str] | None = None, pause: float = 0.2) -> dict[str, Any]:
    log = logs / f"{re.sub(r'[^a-z]+', '-', name)}.log"
    with Child(name, command, log, url, env, stop_timeout=10).started(30) as child:
        ps = psutil.Process(child.pid)
        for _ in range(WARMUP):
            urllib.request.urlopen(url, timeout=10).read()
        start_cpu = cpu_seconds(ps)
        size = 0
        for _ in range(cycles):
            size = len(urllib.request.urlopen(url, timeout=10).read())
            time.sleep(pause)  # as between scrapes: idle time is part of what a program costs
        used = cpu_seconds(ps) - start_cpu
        rss = ps.memory_info().rss
    return {"program": name, "rss_bytes": rss, "cycles": cycles, "cpu_ms_per_cycle": 1000 * used / cycles,
            "page_bytes": size}


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--cycles", type=int, default=100, help="measured cycles per program (default 100)")
    parser.add_argument("--interval", type=float, default=0.5, help="push interval in seconds (default 0.5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parse_script_args(parser, "a few seconds: 5 cycles", cycles=5, interval=0.2)

    with tempfile.TemporaryDirectory(prefix="vmhealth-agent-footprint-") as folder:
        logs = Path(folder)
        results = [measure_push(args.cycles, args.interval, logs),
                   measure_push(args.cycles, args.interval, logs, one_down=True)]
        port = free_port()
        results.append(measure_scrapes(
            "vmhealth agent (pull)", [sys.executable, "-m", "vmhealth.agent", "--log-level", "warning"],
            f"http://127.0.0.1:{port}/metrics", args.cycles, logs,
            env=agent_env(VMHEALTH_AGENT_MODE="pull", VMHEALTH_AGENT_LISTEN=f"127.0.0.1:{port}")))
        node_exporter = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
        if node_exporter:
            port = free_port()
            results.append(measure_scrapes("node_exporter (defaults)", [node_exporter,
                                           f"--web.listen-address=127.0.0.1:{port}"],
                                           f"http://127.0.0.1:{port}/metrics", args.cycles, logs))
    write_result("agent_footprint" + ("_smoke" if args.smoke else ""), {"programs": results}, args.out)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'program':42} {'RSS MiB':>8} {'CPU ms/cycle':>13} {'cycles':>7}")
    for row in results:
        print(f"{row['program']:42} {row['rss_bytes'] / 2**20:8.1f} {row['cpu_ms_per_cycle']:13.2f} {row['cycles']:7d}")
    if not node_exporter:
        print("(node_exporter not installed: apt-get install prometheus-node-exporter to compare)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
