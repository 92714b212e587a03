"""/metrics: the contract's series, escaped labels, and a page the real promtool accepts."""

from __future__ import annotations

import subprocess

import pytest
import responses

from tests.helpers.exporter import API_KEY, PVE, cluster_status, exporter_config, report, resource
from vmhealth.exporter.app import create_app

HOSTILE = ['quote"inside', "back\\slash", "new\nline", "ünïcödé-主机-🖥", "brace}{=,", "tab\there"]


@pytest.fixture
def app(tmp_path):
    app = create_app(exporter_config(tmp_path), start=False)
    guests = [resource(100, lock="backup", tags="a;b"), resource(101, name='we"ird\\name\n'),
              resource(102, status="stopped"), resource(200, kind="lxc", node="pve2", tags="vmhealth-ignore")]
    with responses.RequestsMock() as rsps:
        rsps.get(f"{PVE}/cluster/resources", json={"data": guests})
        rsps.get(f"{PVE}/cluster/status", json={"data": cluster_status({"pve1": True, "pve2": False})})
        app.extensions["vmhealth"].poll_all()
    yield app
    app.extensions["vmhealth"].archive.close()


def scrape(app) -> str:
    reply = app.test_client().get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return reply.get_data(as_text=True)


def samples(page: str) -> dict[str, float]:
    """name{labels} -> value, using the client library's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def test_contract_series(app):
    client = app.test_client()
    assert client.post("/api/health/report", json=report(101, disks=[{"mountpoint": "/data", "usedBytes": 5,
                                                                         "totalBytes": 10}]),
                       headers={"X-API-Key": API_KEY}).status_code == 200
    s = samples(scrape(app))
    base = "cluster=lab,node=pve1,vmid=101"
    assert s[f"vmhealth_heartbeat_timestamp_seconds{{{base}}}"] > 1_700_000_000
    assert s[f"vmhealth_guest_cpu_usage_ratio{{{base}}}"] == pytest.approx(0.452)
    assert s[f"vmhealth_guest_memory_total_bytes{{{base}}}"] == 4096 * 2**20
    assert s["vmhealth_guest_disk_used_bytes{cluster=lab,mountpoint=/data,node=pve1,vmid=101}"] == 5
    assert s[f"vmhealth_guest_uptime_seconds{{{base}}}"] == 3600
    assert s["vmhealth_pve_guest_running{cluster=lab,node=pve1,type=qemu,vmid=102}"] == 0
    assert s["vmhealth_pve_guest_running{cluster=lab,node=pve2,type=lxc,vmid=200}"] == 1
    assert s["vmhealth_pve_guest_locked{cluster=lab,lock=backup,node=pve1,vmid=100}"] == 1
    assert not any(k.startswith("vmhealth_pve_guest_locked") and "vmid=101" in k for k in s)
    assert s["vmhealth_pve_node_up{cluster=lab,node=pve2}"] == 0
    assert s["vmhealth_pve_up{cluster=lab}"] == 1
    assert s["vmhealth_pve_cluster_quorate{cluster=lab}"] == 1
    assert s["vmhealth_guest_monitored{cluster=lab,node=pve2,vmid=200}"] == 0
    assert s["vmhealth_guest_monitored{cluster=lab,node=pve1,vmid=100}"] == 1
    assert s["vmhealth_config_stale_timeout_seconds{cluster=lab}"] == 90
    assert s["vmhealth_config_cpu_threshold_ratio{cluster=lab}"] == 0.8
    assert s["vmhealth_config_memory_threshold_ratio{cluster=lab}"] == 0.9
    assert s["vmhealth_reports_total{result=accepted}"] == 1
    assert not any("vmid=9000" in k for k in s)
    info = [k for k in s if k.startswith("vmhealth_guest_info") and "vmid=100" in k]
    assert info == ["vmhealth_guest_info{cluster=lab,hostname=,name=vm100,node=pve1,tags=a;b,type=qemu,vmid=100}"]


def test_hostile_label_values_stay_valid_for_promtool(app, promtool):
    client = app.test_client()
    for i, hostname in enumerate(HOSTILE):
        reply = client.post("/api/health/report", json=report(100 + i, hostname=hostname, node=hostname),
                            headers={"X-API-Key": API_KEY})
        assert reply.status_code == 200, reply.json
    page = scrape(app)
    from prometheus_client.parser import text_string_to_metric_families

    seen = set()
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            seen.update((sample.labels.get("hostname"), sample.labels.get("node")))
    assert set(HOSTILE) <= seen, "every label value reads back exactly as sent"
    result = subprocess.run([promtool, "check", "metrics"], input=page.encode(), capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_metrics_survive_proxmox_down(app, promtool):
    import requests

    exporter = app.extensions["vmhealth"]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{PVE}/cluster/resources", body=requests.ConnectTimeout("timed out"))
        exporter.poll_all()
    page = scrape(app)
    s = samples(page)
    assert s["vmhealth_pve_up{cluster=lab}"] == 0
    assert s["vmhealth_pve_guest_running{cluster=lab,node=pve1,type=qemu,vmid=100}"] == 1, "last snapshot kept"
    result = subprocess.run([promtool, "check", "metrics"], input=page.encode(), capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_landing_and_probes(tmp_path):
    app = create_app(exporter_config(tmp_path), start=False)
    client = app.test_client()
    assert "/metrics" in client.get("/").get_data(as_text=True)
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{PVE}/cluster/resources", status=500, json={"data": None, "message": "down\n"})
        app.extensions["vmhealth"].poll_all()
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json == {"status": "ready"}  # open to anyone: no cluster names
    app.extensions["vmhealth"].archive.close()
