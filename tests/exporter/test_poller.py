"""The Proxmox poller against Proxmox answers in their real shapes (responses)."""

from __future__ import annotations

import pytest
import requests
import responses

from tests.helpers.exporter import PVE, cluster_status, exporter_config, resource
from vmhealth.exporter.app import create_app

OTHER = "https://pve-b.example.org:8006/api2/json"


@pytest.fixture
def exporter(tmp_path):
    app = create_app(exporter_config(tmp_path, clusters=("lab", "b")), start=False)
    exporter = app.extensions["vmhealth"]
    yield exporter
    exporter.archive.close()


def serve_cluster(rsps, base, guests, nodes=None, quorate=True):
    rsps.get(f"{base}/cluster/resources", json={"data": guests})
    rsps.get(f"{base}/cluster/status", json={"data": cluster_status(nodes or {"pve1": True}, quorate)})


def test_one_poll_is_two_calls_whatever_the_guest_count(exporter):
    guests = [resource(100 + i, node=f"pve{i % 3 + 1}") for i in range(500)]
    with responses.RequestsMock() as rsps:
        serve_cluster(rsps, PVE, guests, {"pve1": True, "pve2": True, "pve3": False})
        serve_cluster(rsps, OTHER, [])
        exporter.poll_all()
        lab_calls = [c for c in rsps.calls if c.request.url.startswith(PVE)]
    assert len(lab_calls) == 2
    assert "type=vm" in lab_calls[0].request.url
    assert lab_calls[0].request.headers["Authorization"] == "PVEAPIToken=monitor@pve!vmhealth=secret-uuid"
    state = exporter.guests.clusters["lab"]
    assert state.up and len(state.snapshot.guests) == 500
    assert state.snapshot.nodes == {"pve1": True, "pve2": True, "pve3": False}


def test_templates_are_left_out_and_fields_kept(exporter):
    guests = [resource(100, lock="backup", tags="web;prod"), resource(9000, template=1),
              resource(200, kind="lxc", status="stopped")]
    with responses.RequestsMock() as rsps:
        serve_cluster(rsps, PVE, guests, quorate=False)
        serve_cluster(rsps, OTHER, [])
        exporter.poll_all()
    snapshot = exporter.guests.clusters["lab"].snapshot
    assert set(snapshot.guests) == {100, 200}
    assert snapshot.guests[100].lock == "backup" and snapshot.guests[100].tags == ("prod", "web")
    assert snapshot.guests[200].type == "lxc" and not snapshot.guests[200].running
    assert snapshot.quorate is False


def test_failure_keeps_the_snapshot_and_recovery_restores_it(exporter):
    with responses.RequestsMock() as rsps:
        serve_cluster(rsps, PVE, [resource(100)])
        serve_cluster(rsps, OTHER, [resource(300)])
        exporter.poll_all()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{PVE}/cluster/resources", body=requests.ConnectionError("connection refused"))
        serve_cluster(rsps, OTHER, [resource(300), resource(301)])
        exporter.poll_all()
    lab, other = exporter.guests.clusters["lab"], exporter.guests.clusters["b"]
    assert lab.up is False and "no answer" in lab.last_error
    assert set(lab.snapshot.guests) == {100}, "the last snapshot is kept"
    assert other.up is True and set(other.snapshot.guests) == {300, 301}, "the other cluster is untouched"
    with responses.RequestsMock() as rsps:
        serve_cluster(rsps, PVE, [resource(100), resource(101)])
        serve_cluster(rsps, OTHER, [resource(300)])
        exporter.poll_all()
    assert lab.up is True and set(lab.snapshot.guests) == {100, 101}


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"data": None, "message": "proxy loop detected\n"}),
        (401, ""),
        (403, {"data": None, "message": "Permission check failed\n"}),
    ],
)
def test_http_errors_mark_the_cluster_down(exporter, status, body):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        if isinstance(body, dict):
            rsps.get(f"{PVE}/cluster/resources", json=body, status=status)
        else:
            rsps.get(f"{PVE}/cluster/resources", body=body, status=status)
        serve_cluster(rsps, OTHER, [])
        assert exporter.pollers["lab"].poll() is False
    state = exporter.guests.clusters["lab"]
    assert state.up is False and f"HTTP {status}" in state.last_error and state.polled_once


def test_silent_running_guests_get_their_qmpstatus_read(exporter):
    from vmhealth.exporter.state import Heartbeat

    exporter.guests.record("lab", 100, Heartbeat(received=1.0, hostname="paused"))
    exporter.guests.record("lab", 101, Heartbeat(received=1.0, hostname="hung"))
    with responses.RequestsMock() as rsps:
        serve_cluster(rsps, PVE, [resource(100), resource(101)])
        rsps.get(f"{PVE}/nodes/pve1/qemu/100/status/current",
                 json={"data": {"status": "running", "qmpstatus": "io-error", "vmid": 100}})
        rsps.get(f"{PVE}/nodes/pve1/qemu/101/status/current",
                 json={"data": {"status": "running", "qmpstatus": "running", "vmid": 101}})
        exporter.pollers["lab"].poll()
    assert exporter.guests.clusters["lab"].paused == {100: "io-error"}


def test_qmpstatus_is_read_once_a_heartbeat_is_half_way_to_stale(exporter):
    """A paused guest is known as paused before its heartbeat is stale; a fresh heartbeat costs no read."""
    import time

    from vmhealth.exporter.state import Heartbeat

    timeout = exporter.pollers["lab"].stale_timeout
    exporter.guests.record("lab", 100, Heartbeat(received=time.time() - timeout / 2 - 5, hostname="paused"))
    exporter.guests.record("lab", 101, Heartbeat(received=time.time() - timeout / 2 + 5, hostname="fresh"))
    with responses.RequestsMock() as rsps:
        serve_cluster(rsps, PVE, [resource(100), resource(101)])
        rsps.get(f"{PVE}/nodes/pve1/qemu/100/status/current",
                 json={"data": {"status": "running", "qmpstatus": "paused", "vmid": 100}})
        exporter.pollers["lab"].poll()
        assert not [c for c in rsps.calls if "/qemu/101/" in c.request.url]
    assert exporter.guests.clusters["lab"].paused == {100: "paused"}


def test_smbios_uuid_lookup_is_bounded_and_cached(tmp_path):
    app = create_app(exporter_config(tmp_path, uuid_lookups_per_poll=2), start=False)
    exporter = app.extensions["vmhealth"]
    uuid = "7B0D8C4E-1A2B-4C3D-9E8F-0123456789AB"
    assert exporter.guests.vmid_for_uuid(uuid) is None  # queued
    guests = [resource(100), resource(101), resource(102)]
    configs = {
        100: "uuid=11111111-2222-3333-4444-555555555555",
        101: "base64=0,uuid=00000000-0000-0000-0000-000000000001",
        102: f"uuid={uuid.lower()}",
    }
    with responses.RequestsMock() as rsps:
        serve_cluster(rsps, PVE, guests)
        for vmid in (100, 101):
            rsps.get(f"{PVE}/nodes/pve1/qemu/{vmid}/config", json={"data": {"smbios1": configs[vmid]}})
        exporter.pollers["lab"].poll()
    assert exporter.guests.vmid_for_uuid(uuid) is None
    with responses.RequestsMock() as rsps:
        serve_cluster(rsps, PVE, guests)
        rsps.get(f"{PVE}/nodes/pve1/qemu/102/config", json={"data": {"smbios1": configs[102], "name": "x"}})
        exporter.pollers["lab"].poll()
    assert exporter.guests.vmid_for_uuid(uuid) == ("lab", 102)
    with responses.RequestsMock() as rsps:  # nothing pending: no config reads at all
        serve_cluster(rsps, PVE, guests)
        exporter.pollers["lab"].poll()
    exporter.archive.close()


def test_report_by_smbios_uuid_as_proxmox_writes_it(tmp_path):
    """The agent sends the firmware UUID (upper case); Proxmox's config has it lower case."""
    from tests.helpers.exporter import API_KEY, report

    app = create_app(exporter_config(tmp_path), start=False)
    exporter = app.extensions["vmhealth"]
    body = report(None, uuid="7B0D8C4E-1A2B-4C3D-9E8F-0123456789AB")
    client = app.test_client()
    first = client.post("/api/health/report", json=body, headers={"X-API-Key": API_KEY})
    assert first.status_code == 404 and "being read" in first.json["error"]
    with responses.RequestsMock() as rsps:
        serve_cluster(rsps, PVE, [resource(105)])
        rsps.get(f"{PVE}/nodes/pve1/qemu/105/config",
                 json={"data": {"smbios1": "uuid=7b0d8c4e-1a2b-4c3d-9e8f-0123456789ab", "name": "vm105"}})
        exporter.poll_all()
    second = client.post("/api/health/report", json=body, headers={"X-API-Key": API_KEY})
    assert second.status_code == 200
    assert ("lab", 105) in exporter.guests.heartbeats
    exporter.archive.close()
