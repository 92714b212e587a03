"""Property tests of heartbeat ingest: whatever a guest sends, the exporter answers 200 or a 4xx with a
message, never crashes, and a refused report changes nothing it has stored.

Cost: about 10 s (a few hundred generated requests through the Flask test client).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.exporter import API_KEY, PVE, cluster_status, exporter_config, report, resource
from vmhealth.exporter.app import create_app
from vmhealth.keys import derive_vm_key

PROPERTY = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FIELDS = ["hostname", "vmid", "uuid", "cluster", "node", "status", "agentVersion", "cpuUsage", "ramUsage",
          "ramTotal", "diskUsage", "diskTotal", "memUsedBytes", "memTotalBytes", "diskUsedBytes", "diskTotalBytes",
          "disks", "netRxBytes", "netTxBytes", "load1", "uptime", "timestamp"]

ARABIC_100 = "\u0661\u0660\u0660"  # digits to str.isdigit(), not to int() in every context
SURROGATE = "a\ud800b"  # what JSON's "\ud800" escape decodes to: not encodable as UTF-8
json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
                | st.sampled_from(["100", "²", ARABIC_100, SURROGATE, " 100 ", "1e3", "0x10", "-1", "9" * 30, "",
                                   "\x00"]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    folder: Path = tmp_path_factory.mktemp("ingest")
    app = create_app(exporter_config(folder, clusters=("lab", "dc2"), max_unknown_guests=2), start=False)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{PVE}/cluster/resources", json={"data": [resource(100), resource(101)]})
        rsps.get(f"{PVE}/cluster/status", json={"data": cluster_status({"pve1": True})})
        rsps.get("https://pve-dc2.example.org:8006/api2/json/cluster/resources", json={"data": [resource(100)]})
        rsps.get("https://pve-dc2.example.org:8006/api2/json/cluster/status",
                 json={"data": cluster_status({"pve1": True}, name="dc2")})
        app.extensions["vmhealth"].poll_all()
    yield app
    app.extensions["vmhealth"].archive.close()


def stored(app: Any) -> tuple[Any, ...]:
    """Everything a report may change: heartbeats, unknown guests, what is due to be written."""
    store = app.extensions["vmhealth"].guests
    with store.lock:
        return (dict(store.heartbeats), {k: set(v) for k, v in store._unknown.items()}, set(store.dirty))


def post(app: Any, body: bytes, key: str | None = API_KEY, content_type: str = "application/json") -> Any:
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["X-API-Key"] = key
    before = stored(app)
    reply = app.test_client().post("/api/health/report", data=body, headers=headers)
    assert reply.status_code < 500, reply.get_data(as_text=True)
    answer = reply.get_json()
    assert isinstance(answer, dict), reply.get_data(as_text=True)
    if reply.status_code == 200:
        assert answer["success"] is True and answer["message"]
    else:
        assert 400 <= reply.status_code < 500
        assert answer["success"] is False and isinstance(answer["error"], str) and answer["error"]
        assert stored(app) == before, "a refused report changed the stored state"
    return reply


@PROPERTY
@given(body=json_values)
def test_any_json_body(app: Any, body: Any) -> None:
    post(app, json.dumps(body).encode())


@PROPERTY
@given(body=st.binary(max_size=300))
def test_any_bytes(app: Any, body: bytes) -> None:
    post(app, body)


@PROPERTY
@given(changes=st.dictionaries(st.sampled_from(FIELDS), json_values, min_size=1, max_size=5),
       vmid=st.sampled_from([100, 101, 102, 555]))
def test_a_real_report_with_any_fields_changed(app: Any, changes: dict[str, Any], vmid: int) -> None:
    post(app, json.dumps({**report(vmid), **changes}).encode())


@PROPERTY
@given(key=st.binary(max_size=80).filter(lambda b: b"\r" not in b and b"\n" not in b).map(lambda b: b.decode("latin-1"))
       | st.sampled_from(["", " ", API_KEY + " ", API_KEY.upper(), API_KEY[:-1]]),
       body=st.sampled_from([report(100), report(101, hostname="x"), report(None, uuid="abc")]))
def test_wrong_keys_are_refused_and_change_nothing(app: Any, key: str, body: dict[str, Any]) -> None:
    """Header bytes as WSGI hands them over (latin-1)."""
    reply = post(app, json.dumps(body).encode(), key=key or None)
    if key != API_KEY:
        assert reply.status_code == 401


@PROPERTY
@given(vmid=st.sampled_from([100, 101]), other=st.sampled_from([100, 101, 555]),
       cluster=st.sampled_from(["lab", "dc2"]))
def test_a_per_vm_key_reports_only_for_its_guest(app: Any, vmid: int, other: int, cluster: str) -> None:
    key = derive_vm_key(API_KEY, "lab", vmid)
    reply = post(app, json.dumps(report(other, cluster=cluster)).encode(), key=key)
    if (cluster, other) == ("lab", vmid):
        assert reply.status_code == 200
    else:
        assert reply.status_code in (401, 403), reply.get_json()


@PROPERTY
@given(content_type=st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "", "application/jsonx"]))
def test_other_media_types_are_415(app: Any, content_type: str) -> None:
    assert post(app, json.dumps(report(100)).encode(), content_type=content_type).status_code == 415


def test_a_lone_surrogate_is_refused_and_metrics_stay_up(app: Any) -> None:
    """One guest's hostname "\\ud800" once made /metrics fail for every guest."""
    body = b'{"hostname": "web\\ud800", "vmid": "100", "node": "pve\\udfff1"}'
    reply = post(app, body)
    assert reply.status_code == 400 and {"hostname", "node"} <= set(reply.get_json()["fields"])
    assert app.test_client().get("/metrics").status_code == 200


def test_the_unicode_digits_python_accepts_are_not_guest_ids(app: Any) -> None:
    for vmid in ("²", ARABIC_100, "9" * 30):
        reply = post(app, json.dumps({**report(100), "vmid": vmid}).encode())
        assert reply.status_code == 400 and "vmid" in reply.get_json()["fields"]
        assert app.test_client().get(f"/api/vms/{vmid}").status_code == 400
