"""Pull mode: the hand-written exposition is valid for the real promtool and reads back exactly,
and the /metrics server answers over real HTTP."""

from __future__ import annotations

import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from vmhealth.agent.collect import Collector, DiskUsage, Sample
from vmhealth.agent.exposition import CONTENT_TYPE, escape, render
from vmhealth.agent.payload import Identity
from vmhealth.agent.push import Pusher
from vmhealth.agent.server import MetricsServer

_SAMPLE_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(page: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of a text page by (name, labels), label values unescaped."""
    values = {}
    for line in page.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_LINE.match(line)
        assert match, line
        labels = frozenset(
            (k, v.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\"))
            for k, v in _LABEL.findall(match.group(3) or "")
        )
        values[(match.group(1), labels)] = float(match.group(4))
    return values


def value(page: str, name: str, **labels: str) -> float | None:
    return parse(page).get((name, frozenset(labels.items())))


def odd_sample() -> Sample:
    return Sample(
        timestamp=1.0, hostname='we"ird\\host\nname', uptime_seconds=12.5, boot_time_seconds=1_700_000_000.0,
        cpu_count=2, cpu_usage_ratio=0.25, cpu_seconds={"user": 10.5, "idle": 100.0},
        memory_used_bytes=2**33, memory_total_bytes=2**34, swap_used_bytes=0, swap_total_bytes=0,
        root=DiskUsage("/", 2**60, 2**61), disks=[DiskUsage('/mnt/"q"', 1, 2)],
        net_rx_bytes={"eth0": 10}, net_tx_bytes={"eth0": 20}, load=(0.5, 0.25, 0.0), failed=["filesystem /gone"],
    )


def test_promtool_accepts_the_page(promtool: str, tmp_path) -> None:
    page = render(odd_sample(), Identity(vmid=100, uuid="7b5a2f0e-1c4e-4b8a-9d2f-3e6c1a0b9d44", cluster="lab"),
                  [Pusher("http://127.0.0.1:1", "k", 1)])
    done = subprocess.run([promtool, "check", "metrics"], input=page, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == "", done.stdout + done.stderr


def test_promtool_accepts_a_live_collection(promtool: str) -> None:
    page = render(Collector(["/tmp"]).collect(), Identity())
    done = subprocess.run([promtool, "check", "metrics"], input=page, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def test_values_and_escaped_labels_read_back() -> None:
    page = render(odd_sample(), Identity(vmid=100, uuid="7b5a2f0e-1c4e-4b8a-9d2f-3e6c1a0b9d44"))
    assert value(page, "vmhealth_agent_info", hostname='we"ird\\host\nname', version=__import__("vmhealth").__version__,
                 vmid="100", uuid="7b5a2f0e-1c4e-4b8a-9d2f-3e6c1a0b9d44", cluster="") == 1
    assert value(page, "vmhealth_agent_cpu_usage_ratio") == 0.25
    assert value(page, "vmhealth_agent_cpu_seconds_total", mode="user") == 10.5
    assert value(page, "vmhealth_agent_memory_used_bytes") == 2**33
    assert value(page, "vmhealth_agent_filesystem_size_bytes", mountpoint="/") == 2**61
    assert value(page, "vmhealth_agent_filesystem_used_bytes", mountpoint='/mnt/"q"') == 1
    assert value(page, "vmhealth_agent_network_receive_bytes_total", device="eth0") == 10
    assert value(page, "vmhealth_agent_load1") == 0.5
    assert value(page, "vmhealth_agent_uptime_seconds") == 12.5
    assert value(page, "vmhealth_agent_collector_success", collector="filesystem") == 0
    assert value(page, "vmhealth_agent_collector_success", collector="memory") == 1
    assert "# TYPE vmhealth_agent_network_transmit_bytes_total counter" in page
    assert "vmhealth_agent_push_failures_total" not in page  # pull only: no push series


def test_push_series_in_mode_both() -> None:
    pusher = Pusher("http://127.0.0.1:1", "k", 1)
    pusher.failures_total = 3
    pusher.last_success = 1_800_000_000.5
    page = render(odd_sample(), Identity(), [pusher])
    assert value(page, "vmhealth_agent_push_failures_total") == 3
    assert value(page, "vmhealth_agent_last_push_timestamp_seconds") == 1_800_000_000.5


def test_push_series_with_two_exporters_one_down() -> None:
    """The newest report either exporter accepted, every failure, and which exporter takes reports."""
    up, down = Pusher("http://a:9747/", "k", 1), Pusher("http://b:9747", "k", 1)
    up.state, up.last_success, up.failures_total = "ok", 1_800_000_100.0, 1
    down.state, down.last_success, down.failures_total = "unreachable", 1_800_000_000.0, 7
    page = render(odd_sample(), Identity(), [down, up])
    assert value(page, "vmhealth_agent_last_push_timestamp_seconds") == 1_800_000_100.0
    assert value(page, "vmhealth_agent_push_failures_total") == 8
    assert value(page, "vmhealth_agent_push_up", exporter="http://a:9747") == 1
    assert value(page, "vmhealth_agent_push_up", exporter="http://b:9747") == 0


def test_escape() -> None:
    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


@pytest.fixture
def metrics_server(port: int) -> Iterator[MetricsServer]:
    calls = []

    def page() -> str:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("collection blew up")
        return render(odd_sample(), Identity(vmid=5))

    server = MetricsServer("127.0.0.1", port, page)
    server.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_server_serves_metrics_survives_a_failed_collection_and_404s_the_rest(
    metrics_server: MetricsServer, port: int
) -> None:
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(base + "/metrics", timeout=5) as reply:
        assert reply.headers["Content-Type"] == CONTENT_TYPE
        assert value(reply.read().decode(), "vmhealth_agent_memory_total_bytes") == 2**34
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(base + "/metrics", timeout=5)
    assert failed.value.code == 500
    with urllib.request.urlopen(base + "/metrics", timeout=5) as reply:
        assert reply.status == 200
    with urllib.request.urlopen(base + "/", timeout=5) as reply:
        assert b"/metrics" in reply.read()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(base + "/nope", timeout=5)
    assert missing.value.code == 404
