"""`make soak` in miniature: bench/soak.py runs the simulator, a gunicorn exporter and a real Prometheus
for a few seconds and writes its result; and its verdict fails a run that lost, erred or grew."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers.requirements import binary

ROOT = Path(__file__).resolve().parents[2]


def soak_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", ROOT / "bench" / "soak.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module
    sys.path.insert(0, str(ROOT / "bench"))  # the script imports its neighbour bench/common.py
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return module


@pytest.mark.binaries
def test_a_short_soak_runs_and_writes_its_result(tmp_path: Path) -> None:
    binary("prometheus")
    command = [sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", "0.3", "--warmup", "0.1",
               "--guests", "150", "--nodes", "3", "--agent-interval", "2", "--scrape-interval", "1",
               "--bucket-seconds", "6", "--sample-seconds", "1", "--out", str(tmp_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=150, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "soak.json").read_text())
    summary = result["summary"]
    assert summary["passed"] and summary["problems"] == []
    assert summary["guests_reporting"] == 150 and summary["agent_failures"] == 0
    assert 40 <= summary["reports_per_s"] <= 110  # 150 guests every 2 s is 75/s
    assert summary["exporter_reports_total"]["accepted"] >= summary["reports_ok"] > 500
    # The agents start before the exporter listens: their refused connections are counted (and left
    # out of the verdict), which shows that a failed heartbeat would be seen.
    assert summary["agent_results_before_ready_excluded"].get("error", 0) > 0
    assert summary["scrapes"] >= 8 and summary["scrapes_down"] == 0 and summary["gets"] >= 10
    assert 20 < summary["memory"]["first_minute_after_warmup_mib"] < 1000
    assert [row["warmup"] for row in summary["minutes"]] == [True, False, False]
    assert summary["page"]["bytes_median"] > 150 * 100 and summary["page"]["samples_per_scrape"] > 150 * 5
    assert "| from s |" in (tmp_path / "soak.md").read_text()
    assert (tmp_path / "work" / "exporter.log").exists()


@pytest.mark.binaries
def test_a_short_soak_of_an_exporter_pair_reports_each_replica(tmp_path: Path) -> None:
    """--replicas 2: every heartbeat reaches both exporters, each is measured on its own."""
    binary("prometheus")
    command = [sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", "0.3", "--warmup", "0.1",
               "--guests", "60", "--nodes", "2", "--agent-interval", "2", "--scrape-interval", "1",
               "--bucket-seconds", "6", "--sample-seconds", "1", "--replicas", "2", "--out", str(tmp_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=150, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((tmp_path / "soak.json").read_text())["summary"]
    assert summary["passed"] and summary["expected_reports_per_s"] == 60.0  # 60 guests, 2 exporters, 2 s
    first, second = summary["replicas"]
    for replica in (first, second):
        assert replica["refused"] == 0 and replica["reports"]["accepted"] > 100
        assert 20 < replica["rss_median_mib"] < 1000 and 0 < replica["cpu_core_share"] < 2
    # each replica got every heartbeat: their counts differ by at most the ones in flight
    assert abs(first["reports"]["accepted"] - second["reports"]["accepted"]) <= 60
    assert first["url"] != second["url"] and (tmp_path / "work" / "exporter-2" / "exporter.log").exists()


def test_the_verdict_fails_on_errors_loss_growth_and_slower_scrapes() -> None:
    soak = soak_module()
    settings = soak.Settings(minutes=3, guests=10, warmup_minutes=1, bucket_seconds=60, scrape_interval=15)
    start = 1_000_000.0
    samples = [{"t": start + t, "rss": 100 * 2**20, "get_status": 200, "get_seconds": 0.1, "agents": {"200": t}}
               for t in range(0, 180, 5)]
    scrapes = [(start + t, 0.2) for t in range(0, 180, 15)]
    ups = [(t, 1.0) for t, _ in scrapes]
    after = {"results": {"200": 175}, "reporting": 10}

    def check(samples=samples, scrapes=scrapes, ups=ups, after=after, accepted=175.0) -> list[str]:
        return soak.summarize(settings, start, start + 180, samples, scrapes, ups, {"results": {}}, after,
                              {"accepted": accepted}, {})["problems"]

    assert check() == []
    assert any("agent heartbeats failed: 3" in p for p in check(after={"results": {"200": 175, "503": 3},
                                                                      "reporting": 10}))
    assert any("missing from the exporter" in p for p in check(accepted=170.0))
    assert any("up == 0" in p for p in check(ups=[*ups, (start + 100, 0.0)]))
    assert any("only 7 of 10" in p for p in check(after={"results": {"200": 175}, "reporting": 7}))
    grown = [{**s, "rss": (100 + 15 * ((s["t"] - start) // 60)) * 2**20} for s in samples]
    assert any("memory grew 13.0%" in p for p in check(samples=grown))  # 115 MiB after the warm-up, then 130
    slower = [{**s, "get_seconds": 0.1 if s["t"] < start + 120 else 0.4} for s in samples]
    assert any("/metrics latency grew" in p for p in check(samples=slower))
    assert check(scrapes=[(t, 0.2 if t < start + 120 else 0.5) for t, _ in scrapes]) == []  # Prometheus' side
    assert any("scrape timeout" in p for p in check(scrapes=[*scrapes, (start + 130, 10.0)]))


def test_bad_options_are_refused_before_anything_starts(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", "0", "--out", str(tmp_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 2 and "--minutes must be positive" in run.stderr
    assert list(tmp_path.iterdir()) == []
