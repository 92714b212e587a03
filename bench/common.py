"""What every comparison script in bench/ shares: child processes, statistics, the machine, results.

Each script measures both sides in one run, alternately, and reports ratios: absolute times drift
on a shared machine, ratios taken side by side much less.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml

from vmhealth.stack.processes import stop_process, wait_for

RESULTS = Path(__file__).resolve().parent / "results"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the caller's VMHEALTH_* switches (a bench must not inherit a test run's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMHEALTH_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


class Child:
    """A program under measurement, its output in a log file, always stopped."""

    def __init__(self, name: str, command: list[str], workdir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log = workdir / f"{name}.log"
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT,
                                        env=env if env is not None else clean_env())

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.tail()}")
        return True

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_http(self, url: str, seconds: float = 120) -> None:
        def ready() -> bool:
            self.alive()
            try:
                return requests.get(url, timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, seconds, f"{self.name} at {url}", 0.2)

    def stop(self) -> None:
        stop_process(self.process, timeout=30)
        self._log_file.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def exporter_child(workdir: Path, port: int, cluster: dict[str, Any], api_key: str, **exporter: Any) -> Child:
    """`vmhealth exporter` as a user runs it (gunicorn), for one simulated cluster; ready when it returns."""
    config = {"clusters": [cluster],
              "exporter": {"listen": f"127.0.0.1:{port}", "api_key": api_key,
                           "database_url": f"sqlite:///{workdir}/exporter.db", **exporter}}
    path = workdir / "vmhealth.yml"
    path.write_text(yaml.safe_dump(config))
    child = Child("exporter", [sys.executable, "-m", "vmhealth", "exporter", "--config", str(path),
                               "--log-level", "warning"], workdir)
    try:
        child.wait_http(f"http://127.0.0.1:{port}/readyz")
    except BaseException:
        child.stop()
        raise
    return child


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
    child = Child("prometheus", [
        require_binary("prometheus"), f"--config.file={path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ], workdir)
    try:
        child.wait_http(f"http://127.0.0.1:{port}/-/ready", 60)
    except BaseException:
        child.stop()
        raise
    return child


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
