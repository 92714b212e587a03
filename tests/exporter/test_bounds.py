"""What one key can make the exporter hold: guests before the first poll, and label values per guest."""

from __future__ import annotations

import json
import logging

import pytest
import requests
import responses

from tests.helpers.exporter import API_KEY, PVE, cluster_status, exporter_config, report, resource
from vmhealth.exporter.app import create_app
from vmhealth.exporter.state import LABEL_TOKEN_SECONDS, MAX_DISKS, NEW_LABELS_PER_HOUR, Disk, Heartbeat


def start(tmp_path, **exporter):
    app = create_app(exporter_config(tmp_path, **exporter), start=False)
    return app, app.extensions["vmhealth"]


def poll(exporter, *vmids: int) -> None:
    with responses.RequestsMock() as rsps:
        rsps.get(f"{PVE}/cluster/resources", json={"data": [resource(v) for v in vmids]})
        rsps.get(f"{PVE}/cluster/status", json={"data": cluster_status({"pve1": True})})
        exporter.poll_all()


def poll_fails(exporter) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{PVE}/cluster/resources", body=requests.ConnectionError("no route to host"))
        exporter.poll_all()


def post(app, body, key=API_KEY):
    return app.test_client().post("/api/health/report", data=json.dumps(body), content_type="application/json",
                                  headers={"X-API-Key": key})


def disks(count: int, prefix: str = "/m") -> list[dict]:
    return [{"mountpoint": f"{prefix}{i}", "usedBytes": 1, "totalBytes": 2} for i in range(count)]


# --- before the first poll ------------------------------------------------------------------------

def test_forged_guests_before_the_first_poll_are_bounded_and_never_restored(tmp_path):
    app, exporter = start(tmp_path, max_unknown_guests=5)
    poll_fails(exporter)
    replies = [post(app, report(1000 + i, disks=disks(60))) for i in range(40)]
    assert [r.status_code for r in replies] == [200] * 5 + [404] * 35
    assert "has not been read from Proxmox yet" in replies[-1].json["error"]
    assert "exporter.max_unknown_guests" in replies[-1].json["error"]
    assert len(exporter.guests.heartbeats) == 5
    assert all(len(hb.disks) == MAX_DISKS for hb in exporter.guests.heartbeats.values())
    assert exporter.reports["not_polled_yet"] == 35 and exporter.reports["accepted"] == 5
    assert 'vmhealth_reports_total{result="not_polled_yet"} 35' in app.test_client().get("/metrics").text
    assert post(app, report(1000)).status_code == 200, "an admitted guest keeps reporting"
    exporter.stop()  # the final flush writes nothing Proxmox has not listed

    _, again = start(tmp_path, max_unknown_guests=5)
    assert again.guests.heartbeats == {}, "a restart restores none of them"
    again.stop()


def test_guests_restored_from_the_database_report_before_the_first_poll(tmp_path):
    app, exporter = start(tmp_path, max_unknown_guests=1)
    poll(exporter, 100, 101, 102)
    for vmid in (100, 101, 102):
        assert post(app, report(vmid)).status_code == 200
    exporter.stop()

    app, exporter = start(tmp_path, max_unknown_guests=1)
    poll_fails(exporter)
    assert [post(app, report(v)).status_code for v in (100, 101, 102)] == [200] * 3, "known from the database"
    assert post(app, report(500)).status_code == 200, "one new guest fits in max_unknown_guests"
    assert post(app, report(501)).status_code == 404
    exporter.stop()


def test_a_guest_accepted_before_the_first_poll_is_written_once_a_poll_lists_it(tmp_path):
    app, exporter = start(tmp_path)
    poll_fails(exporter)
    assert post(app, report(100, hostname="early")).status_code == 200
    assert post(app, report(900)).status_code == 200
    assert exporter.write_behind.flush()
    assert exporter.archive.load() == {}, "nothing Proxmox has not listed is written"
    poll(exporter, 100)
    assert exporter.write_behind.flush()
    assert set(exporter.archive.load()) == {("lab", 100)}, "100 is listed now; 900 still is not"
    assert exporter.archive.load()[("lab", 100)].hostname == "early"
    exporter.stop()


def test_unknown_guests_after_the_first_poll_live_in_memory_only(tmp_path):
    app, exporter = start(tmp_path)
    poll(exporter, 100)
    assert post(app, report(100)).status_code == 200
    assert post(app, report(900)).status_code == 200
    exporter.stop()
    _, again = start(tmp_path)
    assert set(again.guests.heartbeats) == {("lab", 100)}
    again.stop()


# --- series per guest -----------------------------------------------------------------------------

@pytest.fixture
def listed(tmp_path):
    """An exporter whose cluster lists guests 100 and 101."""
    app, exporter = start(tmp_path)
    poll(exporter, 100, 101)
    yield app, exporter
    exporter.stop()


def dropped(app) -> dict[str, float]:
    page = app.test_client().get("/metrics").text
    return {line.split('"')[1]: float(line.split()[-1]) for line in page.splitlines()
            if line.startswith("vmhealth_report_values_dropped_total{")}


def test_disks_after_the_first_16_are_dropped_and_counted(listed):
    app, exporter = listed
    reply = post(app, report(100, disks=disks(20)))
    assert reply.status_code == 200
    assert [d.mountpoint for d in exporter.guests.heartbeats[("lab", 100)].disks] == [f"/m{i}" for i in range(16)]
    assert dropped(app) == {"disks_over_limit": 4}
    reply = post(app, report(100, disks=disks(65)))
    assert reply.status_code == 400 and "more than 64 entries" in reply.json["fields"]["disks"]


def test_new_label_values_are_bounded_and_the_heartbeat_is_kept(listed, caplog):
    app, exporter = listed
    assert post(app, report(101, hostname="first", disks=disks(16))).status_code == 200
    caplog.set_level(logging.INFO, logger="vmhealth.exporter.state")
    for i in range(30):
        before = exporter.guests.heartbeats[("lab", 101)].received
        body = report(101, hostname=f"host-{i}", disks=disks(2) + disks(62, prefix=f"/r{i}-"), cpuUsage=i)
        assert post(app, body).status_code == 200, "a heartbeat is never refused for its labels"
        hb = exporter.guests.heartbeats[("lab", 101)]
        assert hb.received >= before and hb.cpu_ratio == pytest.approx(i / 100), "the heartbeat itself is stored"
        assert hb.hostname == "first" and [d.mountpoint for d in hb.disks] == ["/m0", "/m1"]
    # per report: the new hostname and 14 new mountpoints; the 48 disks after the first 16
    assert dropped(app) == {"label_rate": 30 * 15, "disks_over_limit": 30 * 48}
    lines = [r.getMessage() for r in caplog.records if "lab/101" in r.getMessage()]
    assert len(lines) == 2, "one line per change of state, not one per report"
    assert "faster than 12 an hour" in lines[0] and "more than 16 disks" in lines[1]
    assert post(app, report(101, hostname="first", disks=disks(1))).status_code == 200
    assert [r.getMessage() for r in caplog.records if "lab/101" in r.getMessage()][2:] == [
        "guest lab/101 brings new label values within the limit again", "guest lab/101 sends at most 16 disks again"]


def test_new_label_values_are_earned_over_time(listed):
    _, exporter = listed
    store, t0 = exporter.guests, 1_000_000.0
    store.record("lab", 100, Heartbeat(received=t0, hostname="a"))
    assert store.record("lab", 100, Heartbeat(received=t0 + 1, hostname="b")) == 1
    assert store.heartbeats[("lab", 100)].hostname == "a"
    assert store.record("lab", 100, Heartbeat(received=t0 + LABEL_TOKEN_SECONDS, hostname="b")) == 0
    assert store.heartbeats[("lab", 100)].hostname == "b", "a hostname change gets through within minutes"
    # After a quiet day, at most NEW_LABELS_PER_HOUR new values at once; the rest wait for their tokens.
    many = tuple(Disk(f"/d{i}", 1, 2) for i in range(16))
    assert store.record("lab", 100, Heartbeat(received=t0 + 86400, hostname="b", disks=many)) == 16 - 12
    assert len(store.heartbeats[("lab", 100)].disks) == NEW_LABELS_PER_HOUR
    assert store.record("lab", 100, Heartbeat(received=t0 + 86400 + 4 * LABEL_TOKEN_SECONDS, hostname="b",
                                              disks=many)) == 0


def test_a_restart_grants_no_new_label_values(tmp_path):
    app, exporter = start(tmp_path)
    poll(exporter, 100)
    assert post(app, report(100, hostname="before", disks=disks(2))).status_code == 200
    exporter.stop()
    app, exporter = start(tmp_path)
    poll(exporter, 100)
    assert post(app, report(100, hostname="after", disks=disks(3))).status_code == 200
    hb = exporter.guests.heartbeats[("lab", 100)]
    assert hb.hostname == "before" and len(hb.disks) == 2
    exporter.stop()


def test_the_reported_node_is_bounded_only_where_it_is_a_label(listed):
    _, exporter = listed
    store, t0 = exporter.guests, 1_000_000.0
    for vmid in (100, 900):  # 100 is listed (Proxmox's node is its label), 900 is not
        store.record("lab", vmid, Heartbeat(received=t0, hostname="h", node="pve1"))
        store.record("lab", vmid, Heartbeat(received=t0 + 1, hostname="h", node="pve2"))
    assert store.heartbeats[("lab", 100)].node == "pve2"
    assert store.heartbeats[("lab", 900)].node == "pve1"
