"""The console's pages with 1,000 guests and 10,000 history rows: how long the webhook takes to answer.

    python bench/console_render.py                  # 1,000 guests, 10,000 rows, 20 requests a page
    python bench/console_render.py --guests 100 --rows 1000 --requests 5     # quicker

The real Prometheus serves 24 hours of the recording rules' series for `--guests` guests on two
clusters (written as TSDB blocks by `promtool tsdb create-blocks-from openmetrics`, one sample every 5
minutes, the last one seconds ago, and VMHung firing for 2 % of them). `vmhealth webhook` (gunicorn,
SQLite) holds `--rows` history rows, 200 open incidents and 50 quarantines. A logged-in client asks for
each page `--requests` times on loopback. The goal: every page under one second of server time. The
anchor is Prometheus itself: the time its HTTP API takes for the queries the Now page asks, so the
ratio is what rendering and the database add.

Result: bench/results/console_render.json and a table on stdout.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml
from common import parse_script_args, percentile, script_parser, start_child, write_result

from vmhealth.db import make_engine, upgrade
from vmhealth.models.webhook import Action, Incident, Quarantine
from vmhealth.stack.binaries import require_binary
from vmhealth.stack.launcher import vmhealth_command
from vmhealth.stack.processes import free_port
from vmhealth.webhook import fleet_view
from vmhealth.webhook.database import WebhookDatabase
from vmhealth.webhook.prometheus_api import PrometheusAPI

ADMIN = "bench-console-admin-token"
CLUSTERS = ("east", "west")
STEP = 300
GOAL_SECONDS = 1.0


def guests(count: int) -> list[tuple[str, int]]:
    return [(CLUSTERS[i % 2], 100 + i) for i in range(count)]


def openmetrics(path: Path, fleet: list[tuple[str, int]], end: int) -> None:
    """24 h of every series the console reads, one family after the other, as promtool wants them."""
    times = range(end - 86400, end + 1, STEP)
    families = {
        "cluster_vmid:vmhealth_pve_guest_running:max": lambda c, v, i: (f'node="pve{v % 3 + 1}"', 1.0),
        "vmhealth_guest_info": lambda c, v, i: (f'name="vm{v}",node="pve{v % 3 + 1}",type="qemu"', 1.0),
        "cluster_vmid:vmhealth_heartbeat_age:seconds": lambda c, v, i: ("", float(5 + (v + i) % 25)),
        "cluster_vmid:vmhealth_heartbeat_stale:bool": lambda c, v, i: ("", 0.0),
        "cluster_vmid:vmhealth_heartbeat_silent:bool": lambda c, v, i: ("", 0.0),
        "cluster_vmid:vmhealth_guest_cpu_usage:ratio": lambda c, v, i: ("", ((v * 7 + i) % 100) / 100),
        "cluster_vmid:vmhealth_guest_memory_usage:ratio": lambda c, v, i: ("", ((v * 3 + i) % 90) / 100),
    }
    with path.open("w") as out:
        for name, sample in families.items():
            out.write(f"# TYPE {name} gauge\n")
            for cluster, vmid in fleet:
                for i, t in enumerate(times):
                    extra, value = sample(cluster, vmid, i)
                    labels = f'cluster="{cluster}",vmid="{vmid}"' + (f",{extra}" if extra else "")
                    out.write(f"{name}{{{labels}}} {value} {t}\n")
        out.write("# TYPE ALERTS gauge\n")
        for cluster, vmid in fleet[::50]:
            for t in times[-12:]:
                out.write(f'ALERTS{{alertname="VMHung",alertstate="firing",cluster="{cluster}",vmid="{vmid}"}} 1 {t}\n')
        out.write("# EOF\n")


def database(url: str, fleet: list[tuple[str, int]], rows: int, now: float) -> None:
    engine = make_engine(url)
    upgrade(engine, "webhook")
    store = WebhookDatabase(engine)
    outcomes = ("success", "skipped:cooldown", "skipped:heartbeat-fresh", "skipped:active", "dry-run", "failed")
    with store.tx() as session:
        incidents = []
        for n, (cluster, vmid) in enumerate(fleet[:200]):
            incident = Incident(cluster=cluster, vmid=vmid, open_key=f"{cluster}/{vmid}", alertname="VMHung",
                                attempts=n % 3, opened_at=now - 3600, next_attempt_at=now + 300)
            session.add(incident)
            incidents.append(incident)
        session.flush()
        for cluster, vmid in fleet[200:250]:
            session.add(Quarantine(cluster=cluster, vmid=vmid, since=now - 7200, attempts=3, reason="3 resets"))
        for n in range(rows):
            cluster, vmid = fleet[n % len(fleet)]
            session.add(Action(at=now - (rows - n) * 30, cluster=cluster, vmid=vmid, name=f"vm{vmid}",
                               outcome=outcomes[n % len(outcomes)], actor="alertmanager", reason="VMHung",
                               error="detail of the decision " * 3, incident_id=incidents[n % len(incidents)].id,
                               evidence='{"heartbeat_age": 120, "io_idle_seconds": 130, "qmpstatus": "running"}'))
    engine.dispose()


def timed(session: requests.Session, url: str, count: int) -> list[float]:
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        reply = session.get(url, timeout=60)
        seconds.append(time.perf_counter() - started)
        if reply.status_code != 200 or "/ui/login" in reply.url:
            raise RuntimeError(f"GET {url}: {reply.status_code} {reply.text[:300]}")
    return seconds


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--guests", type=int, default=1000, help="guests Prometheus knows of (1000)")
    parser.add_argument("--rows", type=int, default=10000, help="history rows in the database (10000)")
    parser.add_argument("--requests", type=int, default=20, help="requests per page (20)")
    args = parse_script_args(parser)
    fleet = guests(args.guests)
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="vmhealth-console-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        openmetrics(work / "series.om", fleet, int(now) - 10)
        subprocess.run([require_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics",
                        str(work / "series.om"), str(work / "tsdb")], check=True, capture_output=True)
        database(f"sqlite:///{work}/webhook.db", fleet, args.rows, now)
        print(f"data written in {time.perf_counter() - started:.0f}s", flush=True)
        prom_port, port = free_port(), free_port()
        (work / "prometheus.yml").write_text("global: {}\n")
        config = {"clusters": [{"name": c, "host": "127.0.0.1:9", "token_id": "x@pve!y", "token_secret": "z" * 16}
                               for c in CLUSTERS],
                  "webhook": {"listen": f"127.0.0.1:{port}", "token": ADMIN + "-am", "admin_token": ADMIN,
                              "database_url": f"sqlite:///{work}/webhook.db",
                              "prometheus_url": f"http://127.0.0.1:{prom_port}"}}
        (work / "vmhealth.yml").write_text(yaml.safe_dump(config))
        with start_child("prometheus", [require_binary("prometheus"), f"--config.file={work / 'prometheus.yml'}",
                                        f"--storage.tsdb.path={work / 'tsdb'}", "--log.level=warn",
                                        f"--web.listen-address=127.0.0.1:{prom_port}"], work,
                         f"http://127.0.0.1:{prom_port}/-/ready", 60), \
                start_child("webhook", vmhealth_command("webhook", work / "vmhealth.yml", "--log-level", "warning"),
                            work, f"http://127.0.0.1:{port}/healthz", 60):
            base = f"http://127.0.0.1:{port}/ui"
            session = requests.Session()
            csrf = re.search(r'name="csrf" value="([^"]+)"', session.get(f"{base}/login", timeout=30).text).group(1)
            session.post(f"{base}/login", data={"csrf": csrf, "token": ADMIN, "who": "bench"}, timeout=30)
            page = session.get(f"{base}/", timeout=60).text
            shown = len(re.findall(r'class="chip state-', page))
            if shown < args.guests:
                raise RuntimeError(f"the Now page lists {shown} guests, not {args.guests}")
            middle = session.get(f"{base}/history", timeout=60)
            deep = int(re.findall(r"before=(\d+)", middle.text)[0]) - args.rows // 2
            pages = {
                "Now": f"{base}/",
                "History, newest": f"{base}/history",
                "History, halfway back": f"{base}/history?before={deep}",
                "History, filtered": f"{base}/history?cluster=east&outcome=skipped&since=24h",
                "Guest (4 charts of 24 h)": f"{base}/guests/east/100",
            }
            api = PrometheusAPI(f"http://127.0.0.1:{prom_port}")
            anchor = []
            for _ in range(args.requests):
                began = time.perf_counter()
                fleet_view.guests(api, CLUSTERS)
                anchor.append(time.perf_counter() - began)
            results = {name: timed(session, url, args.requests) for name, url in pages.items()}
    table = {name: {"median_s": round(statistics.median(s), 4), "p95_s": round(percentile(s, 0.95), 4),
                    "max_s": round(max(s), 4)} for name, s in results.items()}
    anchor_median = statistics.median(anchor)
    data = {"guests": args.guests, "history_rows": args.rows, "requests_per_page": args.requests,
            "pages": table, "anchor_prometheus_queries_median_s": round(anchor_median, 4),
            "now_page_over_its_queries": round(table["Now"]["median_s"] / anchor_median, 2),
            "goal_s": GOAL_SECONDS, "goal_met": all(row["max_s"] < GOAL_SECONDS for row in table.values())}
    path = write_result("console_render", data, args.out)
    print(f"{'page':28} {'median':>8} {'p95':>8} {'max':>8}")
    for name, row in table.items():
        print(f"{name:28} {row['median_s'] * 1000:7.0f}ms {row['p95_s'] * 1000:7.0f}ms {row['max_s'] * 1000:7.0f}ms")
    print(f"the Now page's Prometheus queries alone: {anchor_median * 1000:.0f}ms (page/queries "
          f"{data['now_page_over_its_queries']}x); goal under {GOAL_SECONDS:g}s: "
          f"{'met' if data['goal_met'] else 'MISSED'}; {path}")
    return 0 if data["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
