"""One agent, several exporters: every report reaches each exporter that takes it, on time, whatever the
others do (no answer at all, a refused key, a 5xx), and each exporter's trouble is logged once."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.exporter_stand_in import FakeExporter
from vmhealth.agent.payload import Identity
from vmhealth.agent.runner import Agent
from vmhealth.config import load

INTERVAL = 0.4


class StampedAgent(Agent):
    """Reports carry the time they were handed over, so an exporter can tell how late each one came."""

    def report(self) -> dict[str, Any]:
        return {"hostname": "web-1", "vmid": "100", "status": "running", "handed_over": time.time()}


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: an exporter hung mid-request."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def run_agent(urls: list[str], seconds: float) -> None:
    cfg = load(raw={"agent": {"exporter_urls": urls, "api_key": "good-key-0123456789", "interval": f"{INTERVAL}s",
                              "timeout": "10s", "vmid": 100}}, environ={}).agent
    agent = StampedAgent(cfg, collector=object(), identity=Identity(vmid=100), rng=random.Random(3))  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def arrival_delays(exporter: FakeExporter) -> list[float]:
    return [received - report["handed_over"] for report, received in zip(exporter.reports, exporter.received,
                                                                          strict=True)]


@pytest.fixture
def healthy() -> Iterator[FakeExporter]:
    server = FakeExporter(api_key="good-key-0123456789")
    try:
        yield server
    finally:
        server.stop()


def test_an_exporter_that_never_answers_does_not_delay_the_other(healthy: FakeExporter, silent_port: int) -> None:
    # The silent exporter is listed first: sent in turn, each report would wait its timeout (0.32s) for it.
    run_agent([f"http://127.0.0.1:{silent_port}", healthy.url], seconds=3.2)
    delays = arrival_delays(healthy)
    assert len(delays) >= 6, delays  # one per interval, the start-up jitter aside
    assert max(delays) < 0.15, delays


@pytest.mark.parametrize("fault", ["refused key", "server error", "nothing listening"])
def test_a_failing_exporter_never_stops_the_reports_to_the_other(
        healthy: FakeExporter, fault: str, caplog: pytest.LogCaptureFixture) -> None:
    failing = FakeExporter(api_key="another-key-0123456789")
    if fault == "server error":
        failing.status, failing.reply = 503, {"success": False, "error": "database busy"}
    if fault == "nothing listening":
        failing.stop()
    try:
        with caplog.at_level(logging.INFO, logger="vmhealth.agent.push"):
            run_agent([failing.url, healthy.url], seconds=2.5)
    finally:
        if fault != "nothing listening":
            failing.stop()
    assert len(healthy.reports) >= 4 and max(arrival_delays(healthy)) < 0.15
    assert not failing.reports
    # the pushers' own lines: whether the runner's start-up line is captured too depends on the logging
    # levels that earlier tests in this process left behind
    pushed = [r.getMessage() for r in caplog.records if r.name == "vmhealth.agent.push"]
    about_failing = [message for message in pushed if failing.url in message]
    about_healthy = [message for message in pushed if healthy.url in message]
    assert len(about_failing) == 1, about_failing  # once per change of state, not once per report
    assert about_healthy == [f"reporting to {healthy.url}/api/health/report"]



def test_check_sends_one_report_to_each_exporter_and_names_the_one_that_fails(healthy: FakeExporter) -> None:
    import io

    from vmhealth.agent.check import check

    dead = FakeExporter()
    dead.stop()
    cfg = load(raw={"agent": {"exporter_urls": [healthy.url, dead.url], "api_key": "good-key-0123456789",
                              "vmid": 100, "interval": "5s", "timeout": "2s"}}, environ={}).agent
    out = io.StringIO()
    assert check(cfg, out) == 1
    lines = out.getvalue().splitlines()
    assert f"ok      exporter {healthy.url}/api/health/report accepted a report" in lines
    assert any(line.startswith(f"PROBLEM exporter {dead.url}/api/health/report: unreachable") for line in lines), lines
    assert len(healthy.reports) == 1
