"""A guest with its own key cannot grow Prometheus without end: 30 reports, each with 64 mountpoint
names and a hostname it never sent before, scraped by the real Prometheus, leave at most 50 series
of that guest in Prometheus' index, and every heartbeat still arrives (bench/series_growth.py, whose
numbers docs/benchmarks.md shows, run here as a test).

Cost: about 30 s (a simulator, the exporter as a real process, Prometheus scraping every 0.5 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.requirements import binary

pytestmark = [pytest.mark.binaries, pytest.mark.slow]
SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "series_growth.py"


def test_new_mountpoints_and_hostnames_leave_at_most_50_series(tmp_path: Path) -> None:
    binary("prometheus")
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=240, check=False)
    result = json.loads((tmp_path / "series_growth.json").read_text())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert result["reports"] == 30 and result["mountpoints_per_report"] == 64
    assert result["statuses"] == {"200": 30}, "a heartbeat is never refused for its labels"
    assert result["series"] <= 50, result["series_by_name"]
    assert result["mountpoints"] == 16, "the first report's 16; none of the later ones"
    assert result["hostnames"] <= 2, "the first report's hostname (and the empty one before any heartbeat)"
    assert 0 <= result["last_heartbeat_lag_s"] < 2, "the last heartbeat reached Prometheus"
    counters = result["exporter_counters"]
    assert counters["result=accepted"] == 30
    assert counters["reason=disks_over_limit"] == 30 * 48 and counters["reason=label_rate"] == 29 * 17
