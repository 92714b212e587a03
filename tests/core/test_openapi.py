"""docs/openapi.yaml: every route of both apps documented, served at /openapi.yaml, and schemathesis
against the real `vmhealth exporter` and `vmhealth webhook` processes (with a simulated cluster behind
them): no 5xx, every reply has a documented status, media type and schema, every route documented as
authenticated refuses requests without credentials, and requests that break the schema are refused.

Cost: about 40 s on a quiet 2-core machine (two gunicorn processes, a simulator, ~30 examples per
operation).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers.servers import (
    ADMIN_TOKEN,
    AGENT_KEY,
    METRICS_TOKEN,
    READ_TOKEN,
    VIEWER_TOKEN,
    WEBHOOK_TOKEN,
    bearer,
    exporter_config,
    serve,
    webhook_config,
)
from vmhealth.openapi import document
from vmhealth.simulator.testing import running_simulator

ROOT = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load(document())
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          ignored_auth, negative_data_rejection]
FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
schema = schemathesis.openapi.from_dict(SPEC)


def documented(tag: str) -> set[tuple[str, str]]:
    """(METHOD, /path/{param}) of every operation tagged `tag`."""
    return {(method.upper(), path) for path, item in SPEC["paths"].items() for method, op in item.items()
            if tag in op.get("tags", [])}


def routes(app: Any) -> set[tuple[str, str]]:
    """(METHOD, /path/{param}) of every route Flask serves, in OpenAPI's spelling."""
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/ui/"):
            continue  # the console's HTML pages (docs/console.md), not the JSON API
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        out.update((method, path) for method in rule.methods - {"HEAD", "OPTIONS"})
    return out


def test_docs_copy_is_the_package_document() -> None:
    """One document: docs/openapi.yaml is the file the package ships and the servers serve."""
    assert (ROOT / "docs" / "openapi.yaml").read_bytes() == document()
    assert (ROOT / "docs" / "openapi.yaml").resolve() == (ROOT / "vmhealth" / "openapi.yaml").resolve()


def test_every_exporter_route_is_documented_and_every_documented_path_exists(tmp_path: Path) -> None:
    from tests.helpers.exporter import exporter_config as unit_config
    from vmhealth.exporter.app import create_app

    app = create_app(unit_config(tmp_path), start=False)
    try:
        assert routes(app) == documented("exporter")
        reply = app.test_client().get("/openapi.yaml")
        assert reply.status_code == 200 and reply.mimetype == "application/yaml"
        assert reply.data == document()
    finally:
        app.extensions["vmhealth"].archive.close()


def test_every_webhook_route_is_documented_and_every_documented_path_exists(tmp_path: Path) -> None:
    from tests.helpers.webhook import make_config
    from vmhealth.webhook.app import create_app

    app = create_app(make_config(f"sqlite:///{tmp_path}/webhook.db"), start_worker=False)
    try:
        assert routes(app) == documented("webhook")
        reply = app.test_client().get("/openapi.yaml")
        assert reply.status_code == 200 and reply.data == document()
        missing = app.test_client().get("/no/such/route")
        assert missing.status_code == 404 and "error" in missing.json
    finally:
        app.extensions["vmhealth"].close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    folder = tmp_path_factory.mktemp("openapi")
    with running_simulator(nodes=2, guests=6, boot_seconds=0.2, task_seconds=0.1) as sim, \
            serve("exporter", exporter_config(sim, folder, read_token=READ_TOKEN, auth_failures_per_minute=0),
                  folder) as exporter, \
            serve("webhook", with_webhook_keys(webhook_config(sim, folder), viewer_token=VIEWER_TOKEN,
                                               metrics_token=METRICS_TOKEN, auth_failures_per_minute=0),
                  folder) as webhook:
        for vmid in (100, 101):  # some heartbeats, so that /api/vms has rows with every field
            report = {"hostname": f"vm{vmid}", "vmid": str(vmid), "cpuUsage": 5, "ramUsage": 1, "ramTotal": 2}
            assert requests.post(f"{exporter.url}/api/health/report", json=report, timeout=10,
                                 headers={"X-API-Key": AGENT_KEY}).status_code == 200
        yield {"exporter": exporter.url, "webhook": webhook.url}


def with_webhook_keys(config: dict[str, Any], **keys: Any) -> dict[str, Any]:
    config["webhook"].update(keys)
    return config


def credentials(path: str, server: str) -> dict[str, str]:
    """The valid credentials of an operation, so that the fuzzing reaches past authentication
    (the throttle of failed authentications is off: the fuzzing sends wrong ones on purpose)."""
    if path == "/api/health/report":
        return {"X-API-Key": AGENT_KEY}
    if path == "/alerts":
        return bearer(WEBHOOK_TOKEN)
    if path.endswith(("/reset", "/release", "/close-incident", "/pause", "/resume")):
        return bearer(ADMIN_TOKEN)
    if path.endswith(("/reset-history", "/resets", "/api/remediation", "/{vmid}/metrics")):
        return bearer(VIEWER_TOKEN)
    if path in ("/metrics", "/api/vms", "/api/vms/{vmid}", "/api/status"):
        return bearer(READ_TOKEN if server == "exporter" else METRICS_TOKEN)
    return {}


@schema.include(tag="exporter").parametrize()
@FUZZ
def test_exporter_api_conforms(case: Any, servers: dict[str, str]) -> None:
    case.call_and_validate(base_url=servers["exporter"], headers=credentials(case.operation.path, "exporter"),
                           checks=CHECKS, timeout=30)


@schema.include(tag="webhook").parametrize()
@FUZZ
def test_webhook_api_conforms(case: Any, servers: dict[str, str]) -> None:
    checks = CHECKS
    if case.operation.path == "/api/vms/{vmid}/metrics":  # no Prometheus here: its documented 503
        checks = [check for check in CHECKS if check is not not_a_server_error]
    case.call_and_validate(base_url=servers["webhook"], headers=credentials(case.operation.path, "webhook"),
                           checks=checks, timeout=30)
