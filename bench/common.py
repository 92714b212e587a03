"""What every comparison script in bench/ shares: child processes (`vmhealth.stack.launcher`), statistics,
the machine, results.

Each script measures both sides in one run, alternately, and reports ratios: absolute times drift
on a shared machine, ratios taken side by side much less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import yaml

from vmhealth.stack.launcher import Child, clean_env, vmhealth_command

RESULTS = Path(__file__).resolve().parent / "results"


def start_child(name: str, command: list[str], workdir: Path, ready_url: str | None = None, seconds: float = 120,
                env: dict[str, str] | None = None) -> Child:
    """A program under measurement, its output in <workdir>/<name>.log, ready when it returns (stopped
    if it never gets ready); without VMHEALTH_* switches unless `env` is given (a bench must not
    inherit a test run's)."""
    child = Child(name, command, workdir / f"{name}.log", ready_url, env if env is not None else clean_env(),
                  stop_timeout=30)
    try:
        child.start(seconds)
    except BaseException:
        child.stop()
        raise
    return child


def exporter_child(workdir: Path, port: int, cluster: dict[str, Any], api_key: str, **exporter: Any) -> Child:
    """`vmhealth exporter` as a user runs it (gunicorn), for one simulated cluster; ready when it returns."""
    config = {"clusters": [cluster],
              "exporter": {"listen": f"127.0.0.1:{port}", "api_key": api_key,
                           "database_url": f"sqlite:///{workdir}/exporter.db", **exporter}}
    path = workdir / "vmhealth.yml"
    path.write_text(yaml.safe_dump(config))
    return start_child("exporter", vmhealth_command("exporter", path, "--log-level", "warning"), workdir,
                       f"http://127.0.0.1:{port}/readyz")


def prometheus_child(workdir: Path, port: int, target: str | list[str], interval: float,
                     job: str = "vmhealth-exporter") -> Child:
    """Debian's Prometheus scraping `target` (host:port, or a list: replicas of one job) every `interval`
    seconds; ready when it returns."""
    from vmhealth.stack.binaries import require_binary

    def duration(seconds: float) -> str:  # Prometheus' durations take whole numbers of a unit
        return f"{seconds:g}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"

    config = {"global": {"scrape_interval": duration(interval), "scrape_timeout": duration(min(interval, 10))},
              "scrape_configs": [{"job_name": job, "static_configs": [
                  {"targets": [target] if isinstance(target, str) else target}]}]}
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return start_child("prometheus", [
        require_binary("prometheus"), f"--config.file={path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ], workdir, f"http://127.0.0.1:{port}/-/ready", 60)


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its children (gunicorn's master and worker)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        with suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (gunicorn's master and worker)."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (p95 of 20 values is the 19th)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p95 and p99 in milliseconds, and the count."""
    return {"n": len(seconds), "median_ms": 1000 * statistics.median(seconds),
            "p95_ms": 1000 * percentile(seconds, 0.95), "p99_ms": 1000 * percentile(seconds, 0.99)}


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory and load: the context every figure needs."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "kernel": platform.release(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def write_result(name: str, data: dict[str, Any], out: Path | None = None) -> Path:
    """bench/results/<name>.json (or under `out`) with the machine, the time and the command."""
    folder = out or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "command": " ".join(["python", *[Path(sys.argv[0]).as_posix(), *sys.argv[1:]]]),
              "machine": machine(), **data}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def ratio(slow: float, fast: float) -> float:
    return slow / fast if fast > 0 else float("inf")


def elapsed(started: float) -> float:
    return time.perf_counter() - started


def script_parser(doc: str | None) -> argparse.ArgumentParser:
    """A bench script's parser: its module docstring is its --help."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_script_args(parser: argparse.ArgumentParser, smoke: str | None = None,
                      **smoke_sizes: Any) -> argparse.Namespace:
    """The command line, after the options every script ends with: --smoke (when `smoke` says what it
    runs; it sets `smoke_sizes`) and --out."""
    if smoke is not None:
        parser.add_argument("--smoke", action="store_true", help=smoke)
    parser.add_argument("--out", type=Path, help="results folder (default bench/results)")
    args = parser.parse_args()
    if getattr(args, "smoke", False):
        vars(args).update(smoke_sizes)
    return args


def save_result(name: str, data: dict[str, Any], args: argparse.Namespace) -> Path:
    """write_result as <name>_smoke after --smoke, and say where."""
    path = write_result(name + ("_smoke" if getattr(args, "smoke", False) else ""), data, args.out)
    print(f"wrote {path}")
    return path
