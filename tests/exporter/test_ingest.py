"""POST /api/health/report: the original payload, the extended form, and every refusal."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
import responses

from tests.helpers.exporter import API_KEY, PVE, cluster_status, exporter_config, report, resource
from vmhealth.config import load
from vmhealth.exporter.app import create_app
from vmhealth.keys import derive_vm_key


@pytest.fixture
def app(tmp_path):
    app = create_app(exporter_config(tmp_path, max_unknown_guests=2), start=False)
    with responses.RequestsMock() as rsps:
        rsps.get(f"{PVE}/cluster/resources", json={"data": [resource(100), resource(101), resource(200, kind="lxc")]})
        rsps.get(f"{PVE}/cluster/status", json={"data": cluster_status({"pve1": True})})
        app.extensions["vmhealth"].poll_all()
    yield app
    app.extensions["vmhealth"].archive.close()


def post(app, body, key=API_KEY, content_type="application/json"):
    headers = {"X-API-Key": key} if key is not None else {}
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return app.test_client().post("/api/health/report", data=data, headers=headers, content_type=content_type)


def heartbeats(app):
    return app.extensions["vmhealth"].guests.heartbeats


def test_original_payload_is_accepted_unchanged(app):
    reply = post(app, report(100))
    assert reply.status_code == 200
    assert reply.json == {"success": True, "message": "Health report received for web-server-01"}
    hb = heartbeats(app)[("lab", 100)]
    assert hb.cpu_ratio == pytest.approx(0.452)
    assert hb.mem_used == 2048 * 1024 * 1024 and hb.mem_total == 4096 * 1024 * 1024
    assert hb.disk_total == 100000 * 1024 * 1024


def test_guest_timestamp_is_informational(app):
    """A guest clock hours off does not move the heartbeat time: the server's receive time counts."""
    post(app, report(100, timestamp=1))
    assert heartbeats(app)[("lab", 100)].received > 1_700_000_000


def test_extended_form(app):
    body = report(100, memUsedBytes=123, memTotalBytes=456, netRxBytes=10, netTxBytes=20, load1=0.5,
                  disks=[{"mountpoint": "/", "usedBytes": 1, "totalBytes": 2},
                         {"mountpoint": "/var", "usedBytes": 3, "totalBytes": 4}], agentVersion="0.1.0",
                  somethingNew={"ignored": True})
    assert post(app, body).status_code == 200
    hb = heartbeats(app)[("lab", 100)]
    assert (hb.mem_used, hb.mem_total, hb.net_rx, hb.load1) == (123, 456, 10, 0.5)
    assert [d.mountpoint for d in hb.disks] == ["/", "/var"]


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"cpuUsage": "45"}, "cpuUsage"),
        ({"cpuUsage": 100.5}, "cpuUsage"),
        ({"cpuUsage": -1}, "cpuUsage"),
        ({"ramUsage": -5}, "ramUsage"),
        ({"ramTotal": True}, "ramTotal"),
        ({"ramUsage": 8192, "ramTotal": 4096}, "ramUsage"),
        ({"diskTotal": 10**20}, "diskTotal"),
        ({"uptime": 10**12}, "uptime"),
        ({"hostname": "x" * 256}, "hostname"),
        ({"hostname": ""}, "hostname"),
        ({"hostname": None}, "hostname"),
        ({"hostname": 5}, "hostname"),
        ({"vmid": "abc"}, "vmid"),
        ({"vmid": 0}, "vmid"),
        ({"vmid": 1.5}, "vmid"),
        ({"vmid": None}, "vmid"),
        ({"disks": "all"}, "disks"),
        ({"disks": [{"mountpoint": "/"}]}, "disks[0].usedBytes"),
        ({"disks": [{"mountpoint": "/", "usedBytes": 1, "totalBytes": 2}] * 2}, "disks[1].mountpoint"),
    ],
)
def test_bad_fields_are_named(app, fields, bad):
    body = report(100)
    body.update(fields)
    reply = post(app, body)
    assert reply.status_code == 400, reply.json
    assert bad in reply.json["fields"]
    assert reply.json["success"] is False
    assert ("lab", 100) not in heartbeats(app)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(app, literal):
    body = json.dumps(report(100)).replace("45.2", literal)
    reply = post(app, body)
    assert reply.status_code == 400
    assert literal in reply.json["error"]


def test_several_problems_reported_at_once(app):
    reply = post(app, report(100, cpuUsage=500, ramUsage="lots", uptime=-3))
    assert set(reply.json["fields"]) == {"cpuUsage", "ramUsage", "uptime"}


def test_not_json_is_415_and_broken_json_is_400(app):
    assert post(app, "hostname=x", content_type="application/x-www-form-urlencoded").status_code == 415
    assert post(app, "{not json", content_type="application/json").status_code == 400
    assert post(app, "[1, 2]").status_code == 400


def test_deep_nesting_is_400_with_the_key_and_401_without(app, caplog):
    deep = '{"a": ' + "[" * 30_000 + "]" * 30_000 + "}"
    reply = post(app, deep)
    assert reply.status_code == 400 and "nested too deeply" in reply.json["error"]
    wrong = post(app, deep, key="not-the-key")
    assert wrong.status_code == 401 and wrong.json["error"] == "wrong API key"  # nothing about the body
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


def test_body_over_the_limit_is_413(tmp_path):
    app = create_app(exporter_config(tmp_path, max_body_bytes=2048), start=False)
    try:
        reply = post(app, report(100, hostname="h", padding="x" * 4096))
        assert reply.status_code == 413
        assert "2048" in reply.json["error"]
        assert app.extensions["vmhealth"].guests.heartbeats == {}
    finally:
        app.extensions["vmhealth"].archive.close()


def test_missing_and_wrong_keys_are_401(app):
    assert post(app, report(100), key=None).status_code == 401
    reply = post(app, report(100), key="not-the-key")
    assert reply.status_code == 401
    assert "not-the-key" not in reply.get_data(as_text=True)
    assert heartbeats(app) == {}


def test_per_vm_key_reports_only_for_its_own_guest(app):
    own = derive_vm_key(API_KEY, "lab", 101)
    assert post(app, report(101), key=own).status_code == 200
    reply = post(app, report(100), key=own)
    assert reply.status_code == 403
    assert ("lab", 100) not in heartbeats(app)


def test_per_vm_key_without_vmid_identifies_the_guest(app):
    own = derive_vm_key(API_KEY, "lab", 200)
    assert post(app, report(None), key=own).status_code == 200
    assert ("lab", 200) in heartbeats(app)


def test_by_default_only_per_vm_keys_are_accepted_and_the_refusal_says_how(tmp_path, caplog):
    config = exporter_config(tmp_path)
    defaults = load(raw={"clusters": [{"name": "lab", "host": "pve1.example.org:8006", "token_id": "a@pve!b",
                                       "token_secret": "s"}], "exporter": {"api_key": API_KEY}}, environ={})
    assert defaults.exporter.per_vm_keys is True  # a configuration that does not set it
    config = replace(config, exporter=replace(config.exporter, per_vm_keys=defaults.exporter.per_vm_keys))
    with caplog.at_level(logging.WARNING, logger="vmhealth.exporter.service"):
        app = create_app(config, start=False)
    assert "per_vm_keys is false" not in caplog.text
    try:
        reply = post(app, report(100))
        assert reply.status_code == 401
        assert "vmhealth agent-key --cluster CLUSTER --vmid VMID" in reply.json["error"]
        assert "exporter.per_vm_keys: false" in reply.json["error"]
        assert post(app, report(100), key=derive_vm_key(API_KEY, "lab", 100)).status_code == 200
        assert post(app, report(100), key="wrong-key-for-anyone").json["error"] == "wrong API key"
    finally:
        app.extensions["vmhealth"].archive.close()


def test_the_shared_key_opt_out_is_warned_about_once_at_start(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="vmhealth.exporter.service"):
        app = create_app(exporter_config(tmp_path, per_vm_keys=False), start=False)
    app.extensions["vmhealth"].archive.close()
    assert caplog.text.count("exporter.per_vm_keys is false: the shared agent key is accepted") == 1


def test_a_report_borrowing_another_guests_uuid_is_refused_whatever_the_key(app):
    exporter = app.extensions["vmhealth"]
    exporter.guests.add_uuids("lab", {100: "11111111-2222-3333-4444-555555555555"})
    post(app, report(100, hostname="the-real-100"))
    borrowed = {**report(101, hostname="impostor"), "uuid": "11111111-2222-3333-4444-555555555555"}
    for key in (API_KEY, derive_vm_key(API_KEY, "lab", 101)):
        reply = post(app, borrowed, key=key)
        assert reply.status_code == 403 and "belongs to guest lab/100, not to lab/101" in reply.json["error"]
    own_key_no_vmid = {k: v for k, v in borrowed.items() if k != "vmid"}
    assert post(app, own_key_no_vmid, key=derive_vm_key(API_KEY, "lab", 101)).status_code == 403
    assert heartbeats(app)[("lab", 100)].hostname == "the-real-100" and ("lab", 101) not in heartbeats(app)


def test_unknown_guests_are_capped(app):
    """Guests Proxmox does not list are accepted up to max_unknown_guests, then refused with 404."""
    assert post(app, report(900)).status_code == 200
    assert post(app, report(901)).status_code == 200
    reply = post(app, report(902))
    assert reply.status_code == 404
    assert "max_unknown_guests" in reply.json["error"]
    assert post(app, report(900)).status_code == 200  # already admitted guests keep reporting
    assert post(app, report(100)).status_code == 200  # known guests are never capped
    assert len(heartbeats(app)) == 3


def test_unknown_cluster_is_refused(app):
    reply = post(app, report(100, cluster="elsewhere"))
    assert reply.status_code == 400
    assert "elsewhere" in reply.json["error"]


def test_report_counters(app):
    post(app, report(100))
    post(app, report(100, cpuUsage=-1))
    post(app, report(100), key="bad")
    counts = app.extensions["vmhealth"].reports
    assert (counts["accepted"], counts["invalid"], counts["unauthorized"]) == (1, 1, 1)


def test_failed_authentication_is_counted_by_route_and_reason_and_logged_once_a_minute(app, caplog):
    from vmhealth.process_counters import AUTH_FAILURES

    route = "POST /api/health/report"
    before = AUTH_FAILURES.snapshot()
    address = f"198.51.100.{len(before) % 250 + 1}"  # an address no other test used in this process
    with caplog.at_level(logging.WARNING, logger="vmhealth.process_counters"):
        for _ in range(3):
            app.test_client().post("/api/health/report", json=report(100), headers={"X-API-Key": "wrong-key-xyz"},
                                   environ_base={"REMOTE_ADDR": address})
        app.test_client().post("/api/health/report", json=report(100), environ_base={"REMOTE_ADDR": address})
    after = AUTH_FAILURES.snapshot()
    assert after[(route, "wrong")] - before.get((route, "wrong"), 0) == 3
    assert after[(route, "missing")] - before.get((route, "missing"), 0) == 1
    lines = [r.getMessage() for r in caplog.records if address in r.getMessage()]
    assert lines == [f"authentication failed on {route} from {address}: wrong API key (1 in the last minute)"]
    page = app.test_client().get("/metrics").get_data(as_text=True)
    assert f'vmhealth_http_auth_failures_total{{route="{route}",reason="wrong"}} {after[(route, "wrong")]}' in page
    assert "wrong-key-xyz" not in caplog.text
