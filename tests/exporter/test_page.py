"""The /metrics page kept between scrapes says exactly what a page formatted from nothing says, and its
gzip form is one standard gzip stream."""

from __future__ import annotations

import gzip
import time
import zlib

import pytest

from tests.helpers.exporter import API_KEY, exporter_config, report
from vmhealth.exporter.app import create_app
from vmhealth.exporter.exposition import Page, accepts_gzip, render
from vmhealth.exporter.poller import snapshot_from
from vmhealth.exporter.state import Disk, GuestState, Heartbeat


def resources(guests: dict[int, dict]) -> list[dict]:
    return [{"type": "qemu", "vmid": vmid, "node": "pve1", "name": f"vm{vmid}", "status": "running", **extra}
            for vmid, extra in guests.items()]


NODES = [{"type": "node", "name": "pve1", "online": 1}, {"type": "node", "name": "pve2", "online": 1}]


def lines(page: bytes | str) -> list[str]:
    text = page.decode() if isinstance(page, bytes) else page
    return sorted(text.splitlines())


@pytest.fixture
def setup(tmp_path):
    config = exporter_config(tmp_path)
    store = GuestState(config.clusters, None, 100)
    return config, store, Page(config.exporter, config.thresholds)


def scrape(store: GuestState, page: Page, reports: dict[str, int]) -> bytes:
    body, headers = page.scrape(store, reports, "identity")
    assert "Content-Encoding" not in headers
    return body


def fresh(store: GuestState, config, reports: dict[str, int]) -> str:
    clusters, heartbeats = store.view()
    return render(clusters, heartbeats, config.exporter, config.thresholds, reports)


def test_kept_page_follows_every_kind_of_change(setup):
    config, store, page = setup
    guests = {100: {}, 101: {"tags": "web"}, 102: {"lock": "backup"}, 103: {}}
    store.apply_snapshot("lab", snapshot_from(resources(guests), NODES, time.time()), 0.1)
    now = time.time()
    for vmid in (100, 101, 102):
        store.record("lab", vmid, Heartbeat(received=now, hostname=f"h{vmid}", cpu_ratio=0.5, mem_used=1,
                                            mem_total=2, disks=(Disk("/data", 1, 2),)))
    steps = [
        lambda: None,
        # a new heartbeat with other fields: lines appear and disappear
        lambda: store.record("lab", 100, Heartbeat(received=now + 1, hostname='q"uote', uptime=5.0, load1=0.1)),
        # Proxmox: a migration, a lock lifted, a guest gone, a new one, an uptime appearing
        lambda: store.apply_snapshot("lab", snapshot_from(resources({
            100: {"node": "pve2", "uptime": 9}, 101: {"tags": "web"}, 102: {}, 104: {"status": "stopped"}}),
            NODES, time.time()), 0.2),
        lambda: store.set_paused("lab", 100, "paused"),
        # a guest Proxmox does not list reports; the gone one's heartbeat stays until it expires
        lambda: store.record("lab", 999, Heartbeat(received=now, node="pve9", hostname="stray")),
        lambda: store.set_paused("lab", 100, None),
        lambda: store.expire_unknown("lab", now + 10),
    ]
    for i, step in enumerate(steps):
        step()
        reports = {"accepted": i}
        assert lines(scrape(store, page, reports)) == lines(fresh(store, config, reports)), f"after step {i}"
    samples = [line for line in scrape(store, page, {}).decode().splitlines() if not line.startswith("#")]
    assert not [line for line in samples if 'vmid="103"' in line or 'vmid="999"' in line]
    assert not [line for line in samples if line.startswith("vmhealth_pve_guest_locked")]
    assert 'vmhealth_pve_guest_running{cluster="lab",node="pve2",vmid="100",type="qemu"} 1' in samples


def test_background_absorb_then_scrape_equals_fresh(setup):
    config, store, page = setup
    store.apply_snapshot("lab", snapshot_from(resources({v: {} for v in range(100, 150)}), NODES, time.time()), 0.1)
    scrape(store, page, {})
    for vmid in range(100, 150, 3):
        store.record("lab", vmid, Heartbeat(received=time.time(), hostname=f"h{vmid}", cpu_ratio=0.1))
        if vmid % 2:
            page.absorb(store)
    assert lines(scrape(store, page, {})) == lines(fresh(store, config, {}))


def test_gzip_is_one_standard_stream(setup):
    _, store, page = setup
    store.apply_snapshot("lab", snapshot_from(resources({v: {} for v in range(100, 400)}), NODES, time.time()), 0.1)
    for vmid in range(100, 400):
        store.record("lab", vmid, Heartbeat(received=time.time(), hostname=f"h{vmid}", cpu_ratio=0.1))
    for round_ in range(3):
        body, headers = page.scrape(store, {"accepted": round_}, "gzip")
        assert headers["Content-Encoding"] == "gzip"
        plain = page.render(*store.view(), {"accepted": round_})
        # A single gzip member: a decoder that stops after the first member still sees the whole page.
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        assert decoder.decompress(body) + decoder.flush() == plain
        assert decoder.eof and decoder.unused_data == b""
        assert gzip.decompress(body) == plain
        store.record("lab", 100 + round_, Heartbeat(received=time.time(), hostname="changed"))


@pytest.mark.parametrize(("header", "expected"), [
    ("gzip", True), ("gzip, deflate", True), ("deflate, gzip;q=0.5", True), ("*", True), ("", False),
    ("identity", False), ("gzip;q=0", False), ("gzip; q=0.0", False), ("deflate", False),
])
def test_accept_encoding(header, expected):
    assert accepts_gzip(header) is expected


def test_http_scrape_with_and_without_gzip(tmp_path):
    app = create_app(exporter_config(tmp_path), start=False)
    try:
        client = app.test_client()
        exporter = app.extensions["vmhealth"]
        exporter.guests.apply_snapshot("lab", snapshot_from(resources({100: {}}), NODES, time.time()), 0.1)
        assert client.post("/api/health/report", json=report(100), headers={"X-API-Key": API_KEY}).status_code == 200
        zipped = client.get("/metrics", headers={"Accept-Encoding": "gzip"})
        plain = client.get("/metrics")
        assert zipped.headers["Content-Encoding"] == "gzip" and "Content-Encoding" not in plain.headers
        assert gzip.decompress(zipped.get_data()) == plain.get_data()
        assert b'vmhealth_heartbeat_timestamp_seconds{cluster="lab",node="pve1",vmid="100"}' in plain.get_data()
    finally:
        app.extensions["vmhealth"].archive.close()
