"""`exporter.poll_offset`: the two replicas of a pair poll on the clock, half an interval apart, and
keep that stagger across restarts; without it a replica polls at once and then every interval."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers.exporter import exporter_config
from vmhealth.config import ConfigError
from vmhealth.exporter.service import Exporter, poll_timing


def first_poll(tmp_path: Path, **exporter: str) -> float:
    """Unix time of the first scheduled poll of a started exporter."""
    running = Exporter(exporter_config(tmp_path, **exporter))
    running.start()
    try:
        assert running.scheduler is not None
        return running.scheduler.get_job("poll-lab").next_run_time.timestamp()
    finally:
        running.stop()


def test_polls_run_on_the_clock_at_the_offset(tmp_path: Path) -> None:
    for offset in (0.0, 7.5):
        before = time.time()
        first = first_poll(tmp_path, poll_interval="15s", poll_offset=f"{offset:g}s")
        assert first % 15 == pytest.approx(offset, abs=1e-3) and before <= first <= before + 15


def test_without_an_offset_the_first_poll_is_at_once(tmp_path: Path) -> None:
    before = time.time()
    timing = poll_timing(exporter_config(tmp_path, poll_interval="15s").exporter)
    assert before <= timing["next_run_time"].timestamp() <= time.time()


def test_an_offset_outside_the_interval_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        exporter_config(tmp_path, poll_interval="15s", poll_offset="15s")
    assert caught.value.problems == ["exporter.poll_offset: must be from 0s to below exporter.poll_interval (15s)"]
