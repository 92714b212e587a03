"""Property tests of the Alertmanager receiver: whatever arrives at POST /alerts (or the manual API),
the webhook answers 2xx or a 4xx with a message, never crashes, and a refused request records nothing.

Cost: about 10 s (a few hundred generated requests through the Flask test client, SQLite).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.helpers.webhook import ADMIN, TOKEN, auth, firing, make_config
from vmhealth.webhook.app import create_app
from vmhealth.webhook.payload import PayloadError, parse_notification

PROPERTY = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
REFUSED = (400, 401, 404, 405, 413, 415)  # bad input or credentials
TABLES = ("webhook_event", "webhook_incident", "webhook_quarantine", "webhook_action")

ARABIC_100 = "\u0661\u0660\u0660"  # digits to str.isdigit(), not to int() in every context
SURROGATE = "a\ud800b"  # what JSON's "\ud800" escape decodes to: not encodable as UTF-8
json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
                | st.sampled_from(["4", "firing", "resolved", "reset", "²", ARABIC_100, SURROGATE, "9" * 30,
                                   "2026-01-01T00:00:00Z", "2026-13-45T99:99:99Z", "0001-01-01T00:00:00Z",
                                   "qemu/100", ""]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
ALERT_KEYS = ["status", "fingerprint", "startsAt", "endsAt", "labels", "annotations", "generatorURL"]
LABEL_KEYS = ["vmid", "cluster", "action", "remediate", "id", "alertname", "node", "name"]
BODY_KEYS = ["version", "status", "alerts", "truncatedAlerts", "receiver", "groupKey"]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    folder: Path = tmp_path_factory.mktemp("alerts")
    # the throttle of failed authentications is off: these properties fail on purpose, hundreds of times
    app = create_app(make_config(f"sqlite:///{folder}/webhook.db", {"auth_failures_per_minute": 0}, enabled=False),
                     start_worker=False)
    yield app
    app.extensions["vmhealth"].close()


def rows(app: Any) -> dict[str, int]:
    with app.extensions["vmhealth"].store.engine.connect() as connection:
        return {t: connection.execute(text(f"select count(*) from {t}")).scalar_one() for t in TABLES}


def post(app: Any, path: str, body: bytes, headers: dict[str, str]) -> Any:
    before = rows(app)
    reply = app.test_client().post(path, data=body, headers={"Content-Type": "application/json", **headers})
    assert reply.status_code < 500, reply.get_data(as_text=True)
    answer = reply.get_json()
    assert isinstance(answer, dict), reply.get_data(as_text=True)
    if reply.status_code >= 400:
        assert isinstance(answer.get("error"), str) and answer["error"]
    if reply.status_code in REFUSED and "outcome" not in answer:  # a policy's 409 is a decision, recorded
        assert rows(app) == before, "a refused request changed the database"
    return reply


@PROPERTY
@given(body=json_values)
def test_any_json_body(app: Any, body: Any) -> None:
    post(app, "/alerts", json.dumps(body).encode(), auth())


@PROPERTY
@given(body=st.binary(max_size=300))
def test_any_bytes(app: Any, body: bytes) -> None:
    post(app, "/alerts", body, auth())


@PROPERTY
@given(top=st.dictionaries(st.sampled_from(BODY_KEYS), json_values, max_size=3),
       alert=st.dictionaries(st.sampled_from(ALERT_KEYS), json_values, max_size=3),
       labels=st.dictionaries(st.sampled_from(LABEL_KEYS), json_values, max_size=3),
       vmid=st.integers(min_value=100, max_value=120))
def test_a_real_notification_with_any_fields_changed(app: Any, top: dict[str, Any], alert: dict[str, Any],
                                                     labels: dict[str, Any], vmid: int) -> None:
    body = firing(vmid, fingerprint=f"prop{vmid}")
    body["alerts"][0]["labels"].update(labels)
    body["alerts"][0].update(alert)
    body.update(top)
    post(app, "/alerts", json.dumps(body).encode(), auth())


@PROPERTY
@given(token=st.binary(max_size=60).filter(lambda b: b"\r" not in b and b"\n" not in b)
       .map(lambda b: b.decode("latin-1")),
       scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer"]))
def test_wrong_tokens_are_401_and_record_nothing(app: Any, token: str, scheme: str) -> None:
    if token.strip() == TOKEN:
        return
    reply = post(app, "/alerts", json.dumps(firing(150)).encode(), {"Authorization": scheme + token})
    assert reply.status_code == 401


@PROPERTY
@given(body=json_values, vmid=st.sampled_from(["100", "0", "99999999999999", "-1", "abc"]),
       query=st.sampled_from(["", "?cluster=lab", "?cluster=nope", "?cluster="]),
       verb=st.sampled_from(["reset", "release"]), admin=st.booleans())
def test_manual_api_with_any_body(app: Any, body: Any, vmid: str, query: str, verb: str, admin: bool) -> None:
    headers = auth(ADMIN) if admin else auth(TOKEN)  # the Alertmanager token is not the admin's
    reply = post(app, f"/api/vms/{vmid}/{verb}{query}", json.dumps(body).encode(), headers)
    if not admin and vmid == "100":
        assert reply.status_code == 401


@PROPERTY
@given(params=st.dictionaries(st.sampled_from(["vmid", "limit", "before", "since", "outcome", "cluster"]),
                              st.text(max_size=30) | st.sampled_from(["9" * 30, "-1", "0", "²", "24h", "1e999"]),
                              max_size=4))
def test_history_with_any_query(app: Any, params: dict[str, str]) -> None:
    reply = app.test_client().get("/api/resets", query_string=params, headers=auth(ADMIN))
    assert reply.status_code in (200, 400), reply.get_data(as_text=True)
    if reply.status_code == 400:
        assert reply.get_json()["error"]


@pytest.mark.parametrize("labels", [{"vmid": "100", "name": SURROGATE}, {"vmid": "100", SURROGATE: "x"},
                                    {"vmid": "²"}, {"vmid": ARABIC_100}, {"vmid": "9" * 5000}, {"id": "qemu/²"},
                                    {"vmid": " 100"}, {"vmid": "0"}])
def test_guest_ids_python_reads_as_digits_are_named_errors(app: Any, labels: dict[str, str]) -> None:
    body = firing(100, fingerprint="digits")
    del body["alerts"][0]["labels"]["vmid"]
    body["alerts"][0]["labels"].update(labels)
    reply = post(app, "/alerts", json.dumps(body).encode(), auth())
    error = reply.get_json()["error"]
    assert reply.status_code == 400 and ("vmid" in error or "surrogate" in error), error


@PROPERTY
@given(body=json_values)
def test_the_parser_raises_only_payload_errors(body: Any) -> None:
    original = copy.deepcopy(body)
    try:
        parse_notification(body, "lab")
    except PayloadError as exc:
        assert str(exc)
    assert body == original, "the parser must not change its input"
