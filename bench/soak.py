"""Load soak: thousands of simulated agents against `vmhealth exporter` (gunicorn) with Prometheus scraping it.

    python bench/soak.py                      # 10,000 guests on 25 nodes, 30 s agents, 10 minutes
    python bench/soak.py --minutes 2 --guests 2000
    python bench/soak.py --minutes 3 --replicas 2   # an exporter pair: every agent sends to both

The simulator runs as its own `vmhealth sim` process (its agents must not share the GIL with anything
measured); the exporter runs as a user runs it, `vmhealth exporter`; Debian's Prometheus scrapes it
every `--scrape-interval`. Every `--sample-seconds` the script reads the resident memory of the
exporter's processes (psutil, the gunicorn master and its worker), times its own GET /metrics, and
reads the agents' counters. At the end it reads Prometheus' own `scrape_duration_seconds` and `up`.

It passes (exit 0) when, after the exporter became ready:
- no agent heartbeat failed (any answer but 200, or no answer), no GET /metrics failed, no scrape
  had `up == 0`, and every guest reported;
- the exporter's memory grew less than 10 % from the first minute after `--warmup` to the last one
  (the warm-up is excluded: caches, the first snapshot and the heartbeat table fill there);
- the exporter's /metrics latency is stable: the last minute's median of the timed GETs is at most
  1.5 x the first post-warm-up minute's (+ 50 ms), and no Prometheus scrape reached the scrape timeout.
  Prometheus' own `scrape_duration_seconds` is reported per minute too, but not judged by ratio: it
  includes Prometheus parsing and storing every sample of the page, which follows the machine's load
  (also sampled per minute) more than the exporter.

With `--replicas 2` two independent exporters (a database each) receive every heartbeat and Prometheus
scrapes both as one job; memory and CPU are then reported per replica, and the memory figures and
verdict take the larger replica.

The JSON and a markdown table per minute are written to `--out` (default bench/results/soak).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml
from common import cpu_seconds, prometheus_child, script_parser, start_child, tree_rss

from vmhealth.simulator.testing import RunningSimulator, running_simulator
from vmhealth.stack.binaries import require_binary
from vmhealth.stack.launcher import Child, vmhealth_command
from vmhealth.stack.processes import free_port

AGENT_KEY = "soak-agent-shared-key"
JOB = "vmhealth-exporter"
MEMORY_GROWTH_LIMIT = 0.10
LATENCY_RATIO_LIMIT = 1.5
LATENCY_SLACK = 0.05


@dataclass
class Settings:
    minutes: float = 10.0
    guests: int = 10_000
    nodes: int = 25
    agent_interval: float = 30.0
    scrape_interval: float = 15.0
    warmup_minutes: float = 2.0
    bucket_seconds: float = 60.0
    sample_seconds: float = 5.0
    out: str = "bench/results/soak"
    replicas: int = 1


# --- the processes --------------------------------------------------------------------------------

def start_exporter(sim: RunningSimulator, port: int, workdir: Path) -> Child:
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "clusters": [sim.cluster_config(role="audit")],
        "exporter": {"listen": f"127.0.0.1:{port}", "api_key": AGENT_KEY,
                     "database_url": f"sqlite:///{workdir}/exporter.db"},
    }
    path = workdir / "vmhealth.yml"
    path.write_text(yaml.safe_dump(config))
    return start_child("exporter", vmhealth_command("exporter", path), workdir, f"http://127.0.0.1:{port}/readyz")


def start_prometheus(exporter_ports: list[int], port: int, settings: Settings, workdir: Path) -> Child:
    return prometheus_child(workdir, port, [f"127.0.0.1:{p}" for p in exporter_ports], settings.scrape_interval, JOB)


# --- what is sampled ---------------------------------------------------------------------------------

def agent_counts(sim: RunningSimulator) -> dict[str, Any]:
    """The simulated agents' statistics: heartbeats per HTTP status ("error": no answer), how far behind."""
    stats = sim.agents()
    return stats if isinstance(stats, dict) else {}


class Sampler(threading.Thread):
    """Every `interval`: each exporter replica's RSS (`rss` the largest), one timed GET /metrics of the
    first, the agents' counters."""

    def __init__(self, pids: list[int], metrics_url: str, sim: RunningSimulator, interval: float):
        super().__init__(name="soak-sampler", daemon=True)
        self.pids, self.metrics_url, self.sim, self.interval = pids, metrics_url, sim, interval
        self.samples: list[dict[str, Any]] = []
        self.stop_event = threading.Event()
        self.session = requests.Session()

    def run(self) -> None:
        while not self.stop_event.is_set():
            started = time.time()
            rss = [tree_rss(pid) for pid in self.pids]
            sample: dict[str, Any] = {"t": started, "rss": max(rss), "rss_replicas": rss, "load1": os.getloadavg()[0]}
            clock = time.perf_counter()
            try:
                response = self.session.get(self.metrics_url, timeout=30)
                sample["get_status"] = response.status_code
                sample["get_bytes"] = len(response.content)
            except requests.RequestException as exc:
                sample["get_status"] = f"error: {type(exc).__name__}"
            sample["get_seconds"] = time.perf_counter() - clock
            try:
                agents = agent_counts(self.sim)
                sample["agents"] = dict(agents.get("results", {}))
                sample["behind"] = agents.get("behind_seconds")
                sample["reporting"] = agents.get("reporting")
            except Exception as exc:  # the soak goes on; the gap shows in the result
                sample["agents_error"] = f"{type(exc).__name__}: {exc}"
            self.samples.append(sample)
            self.stop_event.wait(max(0.0, self.interval - (time.time() - started)))


def prometheus_samples(prom_url: str, metric: str, seconds: float, at: float) -> list[tuple[float, float]]:
    """The raw samples of `metric` for the exporter job over the last `seconds` before `at`."""
    query = f'{metric}{{job="{JOB}"}}[{int(seconds) + 1}s]'
    data = requests.get(f"{prom_url}/api/v1/query", params={"query": query, "time": at}, timeout=30).json()
    result = data.get("data", {}).get("result", [])
    return [(float(t), float(v)) for series in result for t, v in series["values"]]


def exporter_report_counts(url: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in requests.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("vmhealth_reports_total{"):
            label, value = line.rsplit(" ", 1)
            counts[label.split('"')[1]] = float(value)
    return counts


# --- the summary ----------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    keys = set(after) | set(before)
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(keys) if after.get(k, 0) - before.get(k, 0)}


def buckets(start: float, end: float, size: float, warmup: float, samples: list[dict[str, Any]],
            scrapes: list[tuple[float, float]], baseline_agents: dict[str, float]) -> list[dict[str, Any]]:
    """Per bucket (a minute by default): reports/s, agent failures, RSS, scrape and GET latency."""
    rows = []
    previous = baseline_agents
    edges = [start]
    while edges[-1] + size < end:
        edges.append(edges[-1] + size)
    if len(edges) > 1 and end - edges[-1] < size / 2:
        edges.pop()  # a short tail joins the bucket before it
    for edge, stop in zip(edges, [*edges[1:], end], strict=True):
        inside = [s for s in samples if edge <= s["t"] < stop]
        with_agents = [s for s in inside if "agents" in s]
        agents_end = with_agents[-1]["agents"] if with_agents else previous
        change = delta(agents_end, previous)
        previous = agents_end
        scrape = [v for t, v in scrapes if edge <= t < stop]
        gets = [s["get_seconds"] for s in inside if s.get("get_status") == 200]
        rss = [s["rss"] for s in inside if s["rss"]]
        rows.append({
            "from_s": round(edge - start, 1), "to_s": round(stop - start, 1), "warmup": edge < start + warmup,
            "reports_per_s": round(change.get("200", 0) / max(stop - edge, 1e-9), 1),
            "agent_failures": sum(v for k, v in change.items() if k != "200"),
            "rss_mib": round(statistics.median(rss) / 2**20, 1) if rss else None,
            "scrape_p50_s": _round(percentile(scrape, 0.5)), "scrape_p99_s": _round(percentile(scrape, 0.99)),
            "scrapes": len(scrape),
            "get_p50_s": _round(percentile(gets, 0.5)), "get_p99_s": _round(percentile(gets, 0.99)),
            "behind_s": max((s.get("behind") or 0 for s in inside), default=0),
            "load1": round(statistics.mean(s.get("load1", 0) for s in inside), 2) if inside else None,
        })
    return rows


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def verdict(summary: dict[str, Any], settings: Settings) -> list[str]:
    """The reasons the soak failed; empty when it passed."""
    problems = []
    if summary["agent_failures"]:
        problems.append(f"agent heartbeats failed: {summary['agent_failures']} (last error: "
                        f"{summary['agents'].get('last_error')})")
    if summary["heartbeats_lost"] > 0:
        problems.append(f"{summary['heartbeats_lost']:.0f} heartbeats the agents saw accepted are missing from the "
                        "exporter's vmhealth_reports_total")
    if summary["get_failures"]:
        problems.append(f"GET /metrics failed {summary['get_failures']} time(s)")
    if summary["scrapes_down"]:
        problems.append(f"{summary['scrapes_down']} scrape(s) had up == 0")
    if not summary["scrapes"]:
        problems.append("Prometheus recorded no scrape")
    if summary["guests_reporting"] < settings.guests:
        problems.append(f"only {summary['guests_reporting']} of {settings.guests} guests reported")
    growth = summary["memory"]["growth"]
    if growth is None:
        problems.append("too short to measure memory after the warm-up")
    elif growth >= MEMORY_GROWTH_LIMIT:
        problems.append(f"exporter memory grew {growth:.1%} after the warm-up (limit {MEMORY_GROWTH_LIMIT:.0%})")
    latency = summary["latency"]
    first, last = latency["first_p50_s"], latency["last_p50_s"]
    if first is None or last is None:
        problems.append("too short to compare /metrics latency after the warm-up")
    elif last > first * LATENCY_RATIO_LIMIT + LATENCY_SLACK:
        problems.append(f"/metrics latency grew: median GET {first:.3f}s in the first minute after the warm-up, "
                        f"{last:.3f}s in the last")
    if latency["max_s"] is not None and latency["max_s"] >= latency["timeout_s"]:
        problems.append(f"a scrape took {latency['max_s']:.2f}s, the scrape timeout is {latency['timeout_s']:g}s")
    return problems


def summarize(settings: Settings, start: float, end: float, samples: list[dict[str, Any]],
              scrapes: list[tuple[float, float]], ups: list[tuple[float, float]], agents_before: dict[str, Any],
              agents_after: dict[str, Any], reports: dict[str, float], excluded: dict[str, float]) -> dict[str, Any]:
    warmup = settings.warmup_minutes * 60
    rows = buckets(start, end, settings.bucket_seconds, warmup, samples, scrapes, agents_before.get("results", {}))
    change = delta(agents_after.get("results", {}), agents_before.get("results", {}))
    measured = [r for r in rows if not r["warmup"] and r["rss_mib"] is not None]
    first_rss = measured[0]["rss_mib"] if measured else None
    last_rss = measured[-1]["rss_mib"] if len(measured) > 1 else None
    timed = [r for r in rows if not r["warmup"] and r["get_p50_s"] is not None]
    scrape_values = [v for t, v in scrapes if t >= start]
    summary = {
        "duration_s": round(end - start, 1),
        "reports_ok": change.get("200", 0), "reports_per_s": round(change.get("200", 0) / max(end - start, 1e-9), 1),
        "expected_reports_per_s": round(settings.guests * settings.replicas / settings.agent_interval, 1),
        "agent_failures": sum(v for k, v in change.items() if k != "200"), "agent_results": change,
        "agent_results_before_ready_excluded": excluded,
        "agents": {k: agents_after.get(k) for k in ("last_error", "behind_seconds", "in_flight", "reporting")},
        "guests_reporting": agents_after.get("reporting") or 0,
        "exporter_reports_total": reports,
        # the exporter counts a report before it answers, the agents after: never fewer at the exporter
        "heartbeats_lost": max(0.0, agents_after.get("results", {}).get("200", 0) - reports.get("accepted", 0)),
        "get_failures": sum(1 for s in samples if s.get("get_status") != 200),
        "gets": len(samples),
        "scrapes": len(scrape_values), "scrapes_down": sum(1 for t, v in ups if t >= start and v == 0),
        "memory": {
            "first_minute_after_warmup_mib": first_rss, "last_minute_mib": last_rss,
            "growth": round(last_rss / first_rss - 1, 4) if first_rss and last_rss else None,
            "max_mib": round(max((s["rss"] for s in samples), default=0) / 2**20, 1),
        },
        "latency": {
            # the exporter's own GET /metrics, per minute after the warm-up
            "first_p50_s": timed[0]["get_p50_s"] if timed else None,
            "last_p50_s": timed[-1]["get_p50_s"] if len(timed) > 1 else None,
            # Prometheus' scrape_duration_seconds over the whole run
            "p50_s": _round(percentile(scrape_values, 0.5)), "p99_s": _round(percentile(scrape_values, 0.99)),
            "max_s": _round(max(scrape_values, default=None) if scrape_values else None),
            "timeout_s": min(settings.scrape_interval, 10),
        },
        "minutes": rows,
    }
    summary["problems"] = verdict(summary, settings)
    summary["passed"] = not summary["problems"]
    return summary


def replica_figures(urls: list[str], samples: list[dict[str, Any]], start: float, end: float, settings: Settings,
                    cpu: list[float], reports: list[dict[str, float]]) -> list[dict[str, Any]]:
    """Per exporter replica: RSS after the warm-up (median, max), CPU used over the run as a share of one
    core, and what it did with the reports it received while measured (accepted, refused by reason)."""
    measured = [s for s in samples if s["t"] >= start + settings.warmup_minutes * 60] or samples
    figures = []
    for index, url in enumerate(urls):
        rss = [s["rss_replicas"][index] for s in measured if s.get("rss_replicas")]
        figures.append({
            "url": url,
            "rss_median_mib": round(statistics.median(rss) / 2**20, 1) if rss else None,
            "rss_max_mib": round(max(rss) / 2**20, 1) if rss else None,
            "cpu_core_share": round(cpu[index] / max(end - start, 1e-9), 3),
            "reports": reports[index],
            "refused": sum(v for k, v in reports[index].items() if k != "accepted"),
        })
    return figures


def machine() -> dict[str, Any]:
    return {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "load_avg": [round(x, 2) for x in
                                                                                          os.getloadavg()]}


def markdown(result: dict[str, Any]) -> str:
    s, m = result["settings"], result["summary"]
    lines = [
        f"# Soak {result['started']}", "",
        f"{s['guests']} guests on {s['nodes']} nodes, agents every {s['agent_interval']:g}s, Prometheus every "
        f"{s['scrape_interval']:g}s, {s['minutes']:g} min (warm-up {s['warmup_minutes']:g} min excluded from the "
        f"memory figure). Machine: {result['machine']['cpus']} CPUs, load {result['machine']['load_avg']} at "
        f"start, {result['machine_end']['load_avg']} at the end.", "",
        f"**{'PASSED' if m['passed'] else 'FAILED'}**" + ("" if m["passed"] else ": " + "; ".join(m["problems"])), "",
        f"- heartbeats: {m['reports_ok']:.0f} accepted ({m['reports_per_s']}/s, expected "
        f"{m['expected_reports_per_s']}/s), {m['agent_failures']:.0f} failed; "
        f"{m['guests_reporting']} guests reporting",
        f"- GET /metrics: {m['gets']} timed, {m['get_failures']} failed; scrapes: {m['scrapes']}, "
        f"{m['scrapes_down']} with up == 0",
        f"- exporter RSS: {m['memory']['first_minute_after_warmup_mib']} MiB in the first minute after the warm-up,"
        f" {m['memory']['last_minute_mib']} MiB in the last (growth "
        f"{'n/a' if m['memory']['growth'] is None else format(m['memory']['growth'], '.1%')}), max "
        f"{m['memory']['max_mib']} MiB",
        f"- GET /metrics median: {m['latency']['first_p50_s']} s in the first minute after the warm-up, "
        f"{m['latency']['last_p50_s']} s in the last",
        f"- scrape duration (Prometheus): p50 {m['latency']['p50_s']} s, p99 {m['latency']['p99_s']} s, max "
        f"{m['latency']['max_s']} s; page {m.get('page', {}).get('bytes_median')} bytes, "
        f"{m.get('page', {}).get('samples_per_scrape')} samples per scrape",
        *[f"- replica {r['url']}: RSS median {r['rss_median_mib']} MiB after the warm-up (max {r['rss_max_mib']}), "
          f"CPU {r['cpu_core_share']:.1%} of one core, reports {r['reports']}, {r['refused']:.0f} refused"
          for r in m.get("replicas", [])], "",
        "| from s | reports/s | agent failures | RSS MiB | scrape p50 s | scrape p99 s | GET p50 s | GET p99 s "
        "| agents behind s | load1 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in m["minutes"]:
        mark = " (warm-up)" if r["warmup"] else ""
        lines.append(f"| {r['from_s']:g}{mark} | {r['reports_per_s']} | {r['agent_failures']:.0f} | {r['rss_mib']} | "
                     f"{r['scrape_p50_s']} | {r['scrape_p99_s']} | {r['get_p50_s']} | {r['get_p99_s']} | "
                     f"{r['behind_s']} | {r['load1']} |")
    return "\n".join(lines) + "\n"


# --- the run --------------------------------------------------------------------------------------

def run(settings: Settings) -> dict[str, Any]:
    out = Path(settings.out)
    workdir = out / "work"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    before_machine = machine()
    exporter_ports, prom_port = [free_port() for _ in range(settings.replicas)], free_port()
    exporter_urls, prom_url = [f"http://127.0.0.1:{p}" for p in exporter_ports], f"http://127.0.0.1:{prom_port}"
    with ExitStack() as stack:
        sim = stack.enter_context(running_simulator(
            nodes=settings.nodes, guests=settings.guests, agents_to=",".join(exporter_urls),
            agent_interval=settings.agent_interval, agent_key=AGENT_KEY, subprocess=True, start_timeout=120))
        exporters = []
        for index, port in enumerate(exporter_ports):
            exporters.append(start_exporter(sim, port, workdir if index == 0 else workdir / f"exporter-{index + 1}"))
            stack.callback(exporters[-1].stop)
        prometheus = start_prometheus(exporter_ports, prom_port, settings, workdir)
        stack.callback(prometheus.stop)
        agents_before = agent_counts(sim)
        reports_before = [exporter_report_counts(url) for url in exporter_urls]
        start = time.time()
        cpu_before = [cpu_seconds(e.process.pid) for e in exporters]
        sampler = Sampler([e.process.pid for e in exporters], f"{exporter_urls[0]}/metrics", sim,
                          settings.sample_seconds)
        sampler.start()
        stack.callback(sampler.stop_event.set)
        deadline = start + settings.minutes * 60
        while time.time() < deadline:
            for exporter in exporters:
                exporter.alive()
            prometheus.alive()
            time.sleep(min(1.0, max(0.0, deadline - time.time())))
        sampler.stop_event.set()
        sampler.join(timeout=60)
        end = time.time()
        cpu_after = [cpu_seconds(e.process.pid) for e in exporters]
        agents_after = agent_counts(sim)
        scrapes = prometheus_samples(prom_url, "scrape_duration_seconds", end - start + settings.scrape_interval, end)
        ups = prometheus_samples(prom_url, "up", end - start + settings.scrape_interval, end)
        sizes = prometheus_samples(prom_url, "scrape_samples_scraped", settings.scrape_interval * 2, end)
        by_replica = [exporter_report_counts(url) for url in exporter_urls]
    reports = {key: sum(counts.get(key, 0) for counts in by_replica) for key in {k for c in by_replica for k in c}}
    excluded = agents_before.get("results", {})
    summary = summarize(settings, start, end, sampler.samples, scrapes, ups, agents_before, agents_after, reports,
                        excluded)
    page_bytes = [s["get_bytes"] for s in sampler.samples if "get_bytes" in s]
    summary["page"] = {"bytes_median": int(statistics.median(page_bytes)) if page_bytes else None,
                       "samples_per_scrape": int(sizes[-1][1]) if sizes else None}
    summary["replicas"] = replica_figures(exporter_urls, sampler.samples, start, end, settings,
                                          [b - a for a, b in zip(cpu_before, cpu_after, strict=True)],
                                          [delta(after, before) for before, after in zip(reports_before, by_replica,
                                                                                         strict=True)])
    result = {"started": started, "settings": asdict(settings), "machine": before_machine, "machine_end": machine(),
              "summary": summary}
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "soak.md").write_text(markdown(result))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__)
    defaults = Settings()
    parser.add_argument("--minutes", type=float, default=defaults.minutes, help="how long to measure")
    parser.add_argument("--guests", type=int, default=defaults.guests, help="simulated guests, each with an agent")
    parser.add_argument("--nodes", type=int, default=defaults.nodes)
    parser.add_argument("--agent-interval", type=float, default=defaults.agent_interval, help="seconds")
    parser.add_argument("--scrape-interval", type=float, default=defaults.scrape_interval, help="seconds")
    parser.add_argument("--warmup", type=float, default=defaults.warmup_minutes,
                        help="minutes left out of the memory and latency comparison")
    parser.add_argument("--bucket-seconds", type=float, default=defaults.bucket_seconds, help="rows of the table")
    parser.add_argument("--sample-seconds", type=float, default=defaults.sample_seconds)
    parser.add_argument("--out", default=defaults.out, help="folder for soak.json, soak.md and the logs")
    parser.add_argument("--replicas", type=int, default=defaults.replicas,
                        help="independent exporters; every agent sends each heartbeat to all of them")
    args = parser.parse_args(argv)
    for name in ("minutes", "agent_interval", "scrape_interval", "bucket_seconds", "sample_seconds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.guests < 1 or args.nodes < 1 or args.replicas < 1 or args.warmup < 0:
        parser.error("--guests, --nodes and --replicas must be at least 1, --warmup not negative")
    try:
        require_binary("prometheus")  # before anything is started
    except FileNotFoundError as exc:
        parser.error(str(exc))
    settings = Settings(minutes=args.minutes, guests=args.guests, nodes=args.nodes, agent_interval=args.agent_interval,
                        scrape_interval=args.scrape_interval, warmup_minutes=args.warmup,
                        bucket_seconds=args.bucket_seconds, sample_seconds=args.sample_seconds, out=args.out,
                        replicas=args.replicas)
    result = run(settings)
    sys.stdout.write(markdown(result))
    print(f"written: {Path(settings.out) / 'soak.json'}, {Path(settings.out) / 'soak.md'}")
    return 0 if result["summary"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
