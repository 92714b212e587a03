"""Last-seen state survives a restart, on SQLite and on PostgreSQL."""

from __future__ import annotations

import time

import pytest
import responses

from tests.helpers.exporter import API_KEY, PVE, cluster_status, exporter_config, report, resource
from vmhealth.exporter.app import create_app
from vmhealth.exporter.state import Heartbeat


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    return request.getfixturevalue("postgres_url")


def start(tmp_path, url):
    # an I/O window short enough that a guest idle across two polls (or a restart) is hung at once
    app = create_app(exporter_config(tmp_path, database_url=url, thresholds={"io_window": "100ms"}), start=False)
    poll(app.extensions["vmhealth"])
    return app, app.extensions["vmhealth"]


def poll(exporter):
    """One poll of a cluster whose guests' counters never change."""
    with responses.RequestsMock() as rsps:
        rsps.get(f"{PVE}/cluster/resources", json={"data": [resource(100), resource(101)]})
        rsps.get(f"{PVE}/cluster/status", json={"data": cluster_status({"pve1": True})})
        exporter.poll_all()


def test_restart_keeps_silence_and_health(tmp_path, database_url):
    app, exporter = start(tmp_path, database_url)
    # 100 went silent long ago; 101 reports now.
    exporter.guests.record("lab", 100, Heartbeat(received=1_000.0, hostname="silent", node="pve1", cpu_ratio=0.1))
    assert app.test_client().post("/api/health/report", json=report(101, hostname="fine"),
                                  headers={"X-API-Key": API_KEY}).status_code == 200
    fresh = exporter.guests.heartbeats[("lab", 101)].received
    time.sleep(0.2)  # longer than the I/O window
    poll(exporter)  # no I/O since the first poll: both guests' idle spells are stored
    exporter.stop()  # the final flush

    app2, exporter2 = start(tmp_path, database_url)
    restored = exporter2.guests.heartbeats
    assert restored[("lab", 100)].received == 1_000.0, "a silent guest stays silent"
    assert restored[("lab", 100)].hostname == "silent" and restored[("lab", 100)].cpu_ratio == 0.1
    assert restored[("lab", 101)].received == pytest.approx(fresh), "a fine guest is not made silent"
    assert restored[("lab", 101)].mem_total == 4096 * 2**20
    rows = {r["vmid"]: r for r in app2.test_client().get("/api/vms").json}
    # silent, and idle since the first exporter's first poll (not active at this one's first sight)
    assert rows["100"]["isDown"] is True and rows["100"]["hung"] is True
    assert rows["101"]["health"] == "healthy"
    exporter2.stop()


def test_write_behind_batches_and_updates(tmp_path, database_url):
    _, exporter = start(tmp_path, database_url)
    for i in range(3):
        exporter.guests.record("lab", 100, Heartbeat(received=2_000.0 + i, hostname="h", cpu_ratio=i / 10))
    assert exporter.write_behind.flush()
    exporter.guests.record("lab", 101, Heartbeat(received=3_000.0, hostname="x"))
    assert exporter.write_behind.flush()
    loaded = exporter.archive.load()
    assert loaded[("lab", 100)].received == 2_002.0 and loaded[("lab", 100)].cpu_ratio == 0.2
    assert set(loaded) == {("lab", 100), ("lab", 101)}
    exporter.stop()


def test_failed_write_is_retried_not_lost(tmp_path):
    _, exporter = start(tmp_path, f"sqlite:///{tmp_path}/state.db")
    exporter.guests.record("lab", 100, Heartbeat(received=5.0, hostname="kept"))
    real_write = exporter.archive.write

    def broken(*_args):
        raise OSError("disk full")

    exporter.archive.write = broken
    assert exporter.write_behind.flush() is False
    exporter.archive.write = real_write
    assert exporter.write_behind.flush() is True
    assert exporter.archive.load()[("lab", 100)].hostname == "kept"
    exporter.stop()
