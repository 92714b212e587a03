"""Every benchmark script runs (`bench/run_all.py --smoke`: tiny sizes, seconds each) and writes
well-formed results that docs/benchmarks.md can be rendered from. The numbers are not checked here:
`make bench` measures them."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.requirements import binary

pytestmark = [pytest.mark.slow, pytest.mark.binaries]

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = ("scrape_cost", "ingest_rate", "agent_footprint", "webhook_latency", "detection_latency", "slow_clients")


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    for name in ("prometheus", "alertmanager", "prometheus-pushgateway", "prometheus-node-exporter"):
        binary(name)
    out = tmp_path_factory.mktemp("bench")
    completed = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--smoke", "--out", str(out)],
                               capture_output=True, text=True, timeout=240, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads((out / "benchmarks_smoke.json").read_text())


def test_every_script_ran_with_its_context(smoke: dict[str, Any]) -> None:
    assert set(smoke["results"]) == set(SCRIPTS)
    for name, result in smoke["results"].items():
        assert positive(result["duration_s"]), name
        assert result["machine"]["cores"] >= 1 and result["date"] and "--smoke" in result["command"], name


def test_scrape_cost_compares_both_exporters(smoke: dict[str, Any]) -> None:
    (size,) = smoke["results"]["scrape_cost"]["sizes"]
    targets = {row["target"]: row for row in size["rows"]}
    assert set(targets) == {"vmhealth", "pve-exporter cluster-only", "pve-exporter default"}
    for row in targets.values():
        assert row["n"] == 3 and positive(row["median_ms"]) and row["p95_ms"] >= row["median_ms"]
        assert positive(row["bytes_per_guest"]) and positive(row["series_per_guest"])
    ours = targets["vmhealth"]
    assert ours["api_calls"]["idle"]["polls"] >= 1 and positive(ours["api_calls"]["idle"]["calls_per_poll"])
    assert ours["api_calls"]["scraping"]["scrapes"] >= 1
    assert targets["pve-exporter default"]["api_calls_per_scrape"] > targets["pve-exporter cluster-only"][
        "api_calls_per_scrape"] > 0
    assert positive(targets["pve-exporter default"]["speedup"])


def test_ingest_rate_compares_with_pushgateway(smoke: dict[str, Any]) -> None:
    rows = smoke["results"]["ingest_rate"]["rows"]
    assert {(r["target"], r["connections"]) for r in rows} == {("vmhealth", 4), ("pushgateway", 4)}
    for row in rows:
        assert row["failed"] == 0, row
        assert positive(row["rate"]) and row["p99_ms"] >= row["median_ms"] > 0
    assert positive(next(r for r in rows if r["target"] == "vmhealth")["vs_pushgateway"])


def test_agent_footprint_has_both_modes_and_node_exporter(smoke: dict[str, Any]) -> None:
    programs = {row["program"]: row for row in smoke["results"]["agent_footprint"]["programs"]}
    assert set(programs) == {"vmhealth agent (push)", "vmhealth agent (push, 2 exporters, 1 down)",
                             "vmhealth agent (pull)", "node_exporter (defaults)"}
    for row in programs.values():
        assert positive(row["rss_bytes"]) and row["cycles"] == 5 and row["cpu_ms_per_cycle"] >= 0


def test_webhook_latency_reset_and_bulk(smoke: dict[str, Any]) -> None:
    result = smoke["results"]["webhook_latency"]
    assert result["latency"]["receive_to_reset"]["n"] == 3 and positive(result["latency"]["receive_to_reset"][
        "median_ms"])
    modes = {row["mode"]: row for row in result["bulk"]}
    assert set(modes) == {"kill switch", "dry-run"}
    assert modes["kill switch"]["proxmox_calls"] == 0 and modes["dry-run"]["proxmox_calls"] > 0
    for row in modes.values():
        assert row["alerts"] == 20 and 0 < row["recorded_s"] <= row["decided_s"]


def test_detection_latency_measured_a_reset(smoke: dict[str, Any]) -> None:
    result = smoke["results"]["detection_latency"]
    assert result["scale"] == 60 and len(result["rows"]) == 1
    # the reset cannot come before the stale timeout has passed since the last heartbeat
    assert result["rows"][0]["seconds"] >= result["settings"]["stale_timeout"]
    assert positive(result["original_worst_s"]) and positive(result["design_worst_s"])


def test_slow_clients_probed_both_servers_in_every_condition(smoke: dict[str, Any]) -> None:
    rows = smoke["results"]["slow_clients"]["rows"]
    assert {(r["target"], r["condition"]) for r in rows} == {
        (t, c) for t in ("exporter", "webhook") for c in ("quiet", "trickle", "idle")}
    for row in rows:
        assert all(stats["n"] >= 1 and positive(stats["median_ms"]) for stats in row["requests"].values()), row
        if row["condition"] != "quiet":
            assert row["flood"]["opened"] >= 20, row


def test_the_page_renders_from_the_results(smoke: dict[str, Any], tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from report import render
    finally:
        sys.path.remove(str(BENCH))
    page = render(smoke, tmp_path)
    for heading in ("## 1. Scrape cost", "## 2. Heartbeat ingest", "## 3. Agent footprint", "## 4. Webhook",
                    "## 5. Detection latency", "## 6. One hostile address", "## Reproduce"):
        assert heading in page
    assert "nan" not in page.lower().split() and "**Machine:**" in page
