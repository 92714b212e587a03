"""The Grafana dashboards and provisioning: their structure, and every query run against real data.

The static tests check what Grafana needs to load the files by provisioning or by import (stable
uids, a datasource variable on every panel, no `__inputs`, known series names). The end-to-end test
starts the whole stack (`vmhealth.stack`) with the webhook on PostgreSQL, makes one guest hang (it is
reset) and another hang so that its reset fails (it is quarantined), then expands every template
variable, panel target and annotation of every dashboard as Grafana would, and runs each against
the stack's real Prometheus and the webhook's real PostgreSQL database: each must parse and return
data. About 60 s.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from sqlalchemy import create_engine, text

from tests.helpers.grafana import (
    DASHBOARDS,
    POSTGRES_TYPE,
    PROMETHEUS_TYPE,
    ROOT,
    Query,
    TimeRange,
    Variables,
    builtins,
    label_values,
    load,
    panels,
    queries,
    sql_macros,
)
from tests.helpers.requirements import binary

EXPECTED_UIDS = {"vmhealth-fleet", "vmhealth-guest", "vmhealth-remediation"}
DATASOURCE_TYPES = {"datasource": PROMETHEUS_TYPE, "history": POSTGRES_TYPE}
PROVISIONED = yaml.safe_load((ROOT / "grafana/provisioning/datasources/vmhealth.yml").read_text())
FIXED_UIDS = {source["uid"]: source["type"] for source in PROVISIONED["datasources"]}
GRAFANA_BUILTINS = {"__interval", "__rate_interval", "__range", "__url_time_range", "__all_variables", "__data",
                    "__value", "__timeFilter", "__unixEpochFilter", "__unixEpochGroupAlias"}


def _ids(path: Path) -> str:
    return path.stem


# --- structure ------------------------------------------------------------------------------------

def test_three_dashboards_with_stable_uids() -> None:
    uids = [load(path)["uid"] for path in DASHBOARDS]
    assert sorted(uids) == sorted(EXPECTED_UIDS)
    for path in DASHBOARDS:
        assert load(path)["uid"] == path.stem, f"{path.name}: the file is named after its uid"


@pytest.mark.parametrize("path", DASHBOARDS, ids=_ids)
def test_dashboard_loads_by_provisioning_and_import(path: Path) -> None:
    dashboard = load(path)
    raw = path.read_text()
    assert "__inputs" not in dashboard and "__requires" not in dashboard, \
        "the export-for-sharing form breaks provisioning"
    assert "${DS_" not in raw, "a datasource input placeholder: use the datasource variable"
    assert dashboard["id"] is None, "a fixed numeric id collides with other dashboards"
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["title"].startswith("vmhealth / ")
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, f"panel {panel['title']!r} leaves the grid"
        assert panel["title"], "every panel has a title"
        if panel["type"] != "row":
            assert panel.get("description"), f"panel {panel['title']!r} says what it shows"
    for link in dashboard["links"]:
        if link["url"].startswith("${console_url}/ui/"):
            continue  # the webhook's console, at the address the console_url variable holds
        uid = re.match(r"/d/([\w-]+)", link["url"]).group(1)
        assert uid in EXPECTED_UIDS, f"link to an unknown dashboard {uid}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=_ids)
def test_every_query_uses_a_datasource_variable(path: Path) -> None:
    dashboard = load(path)
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == PROMETHEUS_TYPE

    def check(where: str, datasource: dict[str, Any]) -> None:
        uid = datasource["uid"]
        match = re.fullmatch(r"\$\{(\w+)\}", uid)
        if match:
            name = match.group(1)
            assert name in variables and variables[name]["type"] == "datasource", f"{where}: no variable {name}"
            assert datasource["type"] == variables[name]["query"] == DATASOURCE_TYPES[name], where
        else:
            assert FIXED_UIDS.get(uid) == datasource["type"], f"{where}: datasource {uid} is neither a variable " \
                                                              "nor a provisioned uid"

    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        check(f"panel {panel['title']!r}", panel["datasource"])
        assert panel["targets"], f"panel {panel['title']!r} has no query"
    for query in queries(dashboard):
        check(query.where, query.datasource)
    for var in variables.values():
        if var["type"] == "query":
            check(f"variable {var['name']}", var["datasource"])


@pytest.mark.parametrize("path", DASHBOARDS, ids=_ids)
def test_template_variables_are_defined_and_label_values(path: Path) -> None:
    dashboard = load(path)
    variables = dashboard["templating"]["list"]
    names = [var["name"] for var in variables]
    assert "cluster" in names
    for index, var in enumerate(variables):
        if var["type"] != "query":
            continue
        label_values(var["definition"])
        assert var["query"]["query"] == var["definition"]
        used = set(re.findall(r"\$(\w+)", var["definition"]))
        assert used <= set(names[:index]), f"variable {var['name']} uses a variable defined after it"
    for query in queries(dashboard):
        used = set(re.findall(r"\$\{?(\w+)", query.text))
        unknown = used - set(names) - GRAFANA_BUILTINS
        assert not unknown, f"{query.where}: unknown variables {unknown}"


def _known_series() -> set[str]:
    """Every series name the exporter, the webhook and the recording rules produce."""
    from vmhealth.exporter.exposition import FAMILIES
    from vmhealth.webhook.metrics import WebhookMetrics

    names = set(FAMILIES)
    metrics = WebhookMetrics()
    metrics.add_state(lambda: {"incidents": [], "quarantined": [], "circuit": {}, "queue": 0, "pauses": [],
                               "pause_alert_after": 0.0})
    for family in metrics.registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    for group in yaml.safe_load((ROOT / "prometheus/rules/vmhealth-recording.yml").read_text())["groups"]:
        names.update(rule["record"] for rule in group["rules"])
    return names | {"ALERTS"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=_ids)
def test_queries_name_only_series_that_exist(path: Path) -> None:
    known = _known_series()
    tables = set()
    for query in queries(load(path)):
        if query.kind == "sql":
            tables.update(re.findall(r"\bFROM\s+(\w+)", query.text, re.IGNORECASE))
            continue
        for name in re.findall(r"\b(?:[a-z_]+:)?vmhealth_\w+(?::\w+)?\b|\bALERTS\b", query.text):
            assert name in known, f"{query.where}: no such series {name}"
    assert tables <= {"webhook_action"}, f"unknown tables {tables}"


def test_provisioning_points_at_the_dashboards_and_fixed_uids() -> None:
    assert FIXED_UIDS == {"vmhealth-prometheus": PROMETHEUS_TYPE, "vmhealth-history": POSTGRES_TYPE}
    providers = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/vmhealth.yml").read_text())["providers"]
    assert [p["type"] for p in providers] == ["file"]
    assert providers[0]["options"]["path"] == "/etc/grafana/dashboards/vmhealth"


# --- every query against real data ----------------------------------------------------------------

class Runner:
    """Runs a dashboard's variables and queries as Grafana would, and collects what failed."""

    def __init__(self, prometheus: str, database_url: str, times: TimeRange):
        self.prometheus = prometheus
        self.engine = create_engine(database_url)
        self.times = times
        self.failures: list[str] = []
        self.results: dict[str, Any] = {}

    def close(self) -> None:
        self.engine.dispose()

    def prometheus_get(self, path: str, params: dict[str, Any]) -> Any:
        reply = requests.get(f"{self.prometheus}{path}", params=params, timeout=30)
        body = reply.json()
        if body.get("status") != "success":
            raise AssertionError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def resolve(self, dashboard: dict[str, Any], choose: dict[str, str]) -> Variables:
        """Each query variable's values from Prometheus; `choose` picks one where the test wants a given one."""
        variables = Variables()
        for var in dashboard["templating"]["list"]:
            if var["type"] != "query":
                continue
            selector, label = label_values(variables.promql(var["definition"]))
            values = self.prometheus_get(f"/api/v1/label/{label}/values", {
                "match[]": selector, "start": self.times.start, "end": self.times.end})
            assert values, f"variable {var['name']}: {var['definition']} found no values"
            if var["name"] in choose:
                assert choose[var["name"]] in values, f"variable {var['name']}: {values} lacks {choose[var['name']]}"
                values = [choose[var["name"]]]
            elif not var.get("includeAll"):
                values = values[:1]
            variables.set(var["name"], values, bool(var.get("multi") or var.get("includeAll")))
        return variables

    def run(self, query: Query, variables: Variables) -> Any:
        times = self.times.for_query(query.min_step)
        try:
            if query.kind == "sql":
                sql = sql_macros(builtins(variables.sql(query.text), times), times)
                with self.engine.connect() as connection:
                    rows = connection.execute(text(sql.replace(":", r"\:"))).fetchall()
                result: Any = rows
            else:
                expr = builtins(variables.promql(query.text), times)
                if query.kind == "instant":
                    result = self.prometheus_get("/api/v1/query", {"query": expr, "time": times.end})["result"]
                else:
                    result = self.prometheus_get("/api/v1/query_range", {
                        "query": expr, "start": times.start, "end": times.end,
                        "step": times.interval})["result"]
            if not result:
                self.failures.append(f"{query.where}: no data for\n    {query.text}")
            return result
        except Exception as exc:  # every failure is collected, so one run reports them all
            self.failures.append(f"{query.where}: {exc.__class__.__name__}: {exc}\n    {query.text}")
            return None


def _heartbeat(vmid: int, node: str, cluster: str, sent: int) -> dict[str, Any]:
    """An agent's report with the extended fields the simulated agents leave out (network, load, mounts)."""
    return {"hostname": f"guest-{vmid}", "vmid": str(vmid), "node": node, "cluster": cluster, "status": "running",
            "cpuUsage": 12.5, "ramUsage": 1024, "ramTotal": 4096, "diskUsage": 5120, "diskTotal": 20480,
            "memUsedBytes": 1 << 30, "memTotalBytes": 4 << 30, "diskUsedBytes": 5 << 30,
            "diskTotalBytes": 20 << 30, "uptime": 3600 + sent, "timestamp": int(time.time()),
            "netRxBytes": 10_000_000 + 250_000 * sent, "netTxBytes": 5_000_000 + 100_000 * sent, "load1": 0.5,
            "disks": [{"mountpoint": "/var", "usedBytes": 1 << 30, "totalBytes": 10 << 30}]}


def _wait(condition: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"gave up after {seconds:.0f}s waiting for {what}")


@pytest.fixture
def stack(postgres_url: str, tmp_path: Path) -> Iterator[Any]:
    from vmhealth.stack.running import StackSettings, running_stack

    for name in ("prometheus", "alertmanager"):
        binary(name)  # skipped, or failed where required, like every test of the real binaries
    # the webhook on PostgreSQL, as in the compose stack; one attempt per incident, so that a reset that
    # fails quarantines its guest at once
    settings = StackSettings(nodes=2, guests=10, database_url=postgres_url, policy={"max_attempts": 1})
    with running_stack(settings, workdir=tmp_path / "stack") as running:
        yield running


@pytest.mark.slow
@pytest.mark.binaries
@pytest.mark.postgres
def test_every_dashboard_query_returns_data(stack: Any, postgres_url: str) -> None:
    started = time.time()
    _wait(lambda: len(stack.query('cluster_vmid:vmhealth_guest_health:state{health="healthy"}')) == 10, 60,
          "every guest to report")
    guests = {int(s["metric"]["vmid"]): s["metric"]["node"] for s in stack.query("vmhealth_guest_info")}
    reset_vmid, failing_vmid, silent_vmid = sorted(guests)[:3]

    # the guest that hangs had an agent that reports network counters, load and an extra mount
    stack.sim.hang(reset_vmid)
    for sent in range(3):
        reply = requests.post(f"{stack.urls['exporter']}/api/health/report",
                              headers={"X-API-Key": stack.agent_key(reset_vmid)},
                              json=_heartbeat(reset_vmid, guests[reset_vmid], stack.cluster, sent), timeout=10)
        assert reply.status_code == 200, reply.text
        time.sleep(2.5)
    stack.sim.stuck(failing_vmid)  # hung, and its reset times out: quarantined after one attempt
    stack.sim.agent_dead(silent_vmid)  # its agent dies, the guest works on: VMAgentSilent, never a reset

    _wait(lambda: any(row["outcome"] == "success" for row in stack.resets(reset_vmid)), 120,
          f"guest {reset_vmid} to be reset")
    _wait(lambda: stack.query(f'vmhealth_remediation_quarantined{{vmid="{failing_vmid}"}}'), 120,
          f"guest {failing_vmid} to be quarantined")
    _wait(lambda: stack.query(f'ALERTS{{alertname="VMResetFailed", alertstate="firing", vmid="{failing_vmid}"}}'),
          60, "VMResetFailed to fire")
    _wait(lambda: stack.query(f'ALERTS{{alertname="VMAgentSilent", alertstate="firing", vmid="{silent_vmid}"}}'),
          60, "VMAgentSilent to fire")

    # Grafana derives $__interval and $__rate_interval from the datasource's timeInterval (15s as provisioned)
    prometheus_source = next(s for s in PROVISIONED["datasources"] if s["type"] == PROMETHEUS_TYPE)
    scrape = float(prometheus_source["jsonData"]["timeInterval"].rstrip("s"))
    times = TimeRange(start=started - 60, end=time.time(), scrape_interval=scrape)
    runner = Runner(stack.urls["prometheus"], postgres_url, times)
    try:
        ran = 0
        for path in DASHBOARDS:
            dashboard = load(path)
            choose = {"cluster": stack.cluster, "vmid": str(reset_vmid)}
            variables = runner.resolve(dashboard, choose)
            for query in queries(dashboard):
                runner.results[f"{dashboard['uid']}: {query.where}"] = runner.run(query, variables)
                ran += 1
    finally:
        runner.close()
    assert not runner.failures, f"{len(runner.failures)} of {ran} queries failed:\n" + "\n".join(runner.failures)
    assert ran >= 50

    # and they show what happened
    results = runner.results
    history = results["vmhealth-remediation: panel 'History' target A"]
    outcomes = {(row.vmid, row.outcome) for row in history}
    assert (reset_vmid, "success") in outcomes and (failing_vmid, "failed") in outcomes, outcomes
    quarantined = results["vmhealth-remediation: panel 'Quarantined guests' target A"]
    assert [s["metric"]["vmid"] for s in quarantined] == [str(failing_vmid)]
    guest_rows = results["vmhealth-fleet: panel 'Guests' target A"]
    assert len(guest_rows) == 10
    silent = results["vmhealth-fleet: panel 'Agent silent, guest working (VMAgentSilent)' target A"]
    assert [s["metric"]["vmid"] for s in silent] == [str(silent_vmid)]
    assert not stack.sim.resets(silent_vmid)
    resets = results["vmhealth-guest: annotation 'Resets'"]
    assert "success" in [row.tags for row in resets], resets
