"""What one key can make the exporter hold: guests before the first poll, and label values per guest."""

from __future__ import annotations

import json

import requests
import responses

from tests.exporter_fixtures import API_KEY, PVE, cluster_status, exporter_config, report, resource
from vmhealth.exporter.app import create_app


def start(tmp_path, **exporter):
    app = create_app(exporter_config(tmp_path, **exporter), start=False)
    return app, app.extensions["vmhealth_exporter"]


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
    assert len(exporter.store.heartbeats) == 5
    assert exporter.reports["not_polled_yet"] == 35 and exporter.reports["accepted"] == 5
    assert 'vmhealth_reports_total{result="not_polled_yet"} 35' in app.test_client().get("/metrics").text
    assert post(app, report(1000)).status_code == 200, "an admitted guest keeps reporting"
    exporter.stop()  # the final flush writes nothing Proxmox has not listed

    _, again = start(tmp_path, max_unknown_guests=5)
    assert again.store.heartbeats == {}, "a restart restores none of them"
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
    assert exporter.db.load() == {}, "nothing Proxmox has not listed is written"
    poll(exporter, 100)
    assert exporter.write_behind.flush()
    assert set(exporter.db.load()) == {("lab", 100)}, "100 is listed now; 900 still is not"
    assert exporter.db.load()[("lab", 100)].hostname == "early"
    exporter.stop()


def test_unknown_guests_after_the_first_poll_live_in_memory_only(tmp_path):
    app, exporter = start(tmp_path)
    poll(exporter, 100)
    assert post(app, report(100)).status_code == 200
    assert post(app, report(900)).status_code == 200
    exporter.stop()
    _, again = start(tmp_path)
    assert set(again.store.heartbeats) == {("lab", 100)}
    again.stop()
