"""What the console shows about guests, read from Prometheus' recording rules and `ALERTS`.

The rules are the judges of hung, stale and silent; the console repeats their verdicts and never
computes its own, so a page and an alert cannot disagree. One instant query per family for the whole
fleet keeps the Now page to a handful of requests however many guests there are.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .prometheus_api import PrometheusAPI

# The guest states, worst first: the order of the Now page.
STATES = ("hung", "hung-pending", "stale", "silent", "no-agent", "ok", "stopped")
ALERTNAMES = ("VMHung", "VMHeartbeatStale", "VMAgentSilent", "VMAgentMissing")
CHART_POINTS = 240


@dataclass
class GuestView:
    cluster: str
    vmid: int
    name: str = ""
    node: str = ""
    running: bool | None = None
    heartbeat_age: float | None = None
    stale: bool = False
    silent: bool = False
    cpu: float | None = None
    memory: float | None = None
    alerts: dict[str, str] = field(default_factory=dict)  # alertname -> pending | firing

    @property
    def state(self) -> str:
        if self.alerts.get("VMHung") == "firing":
            return "hung"
        if "VMHung" in self.alerts:
            return "hung-pending"
        if self.running is False:
            return "stopped"
        if self.stale or "VMHeartbeatStale" in self.alerts:
            return "stale"
        if self.silent or "VMAgentSilent" in self.alerts:
            return "silent"
        if self.heartbeat_age is None or "VMAgentMissing" in self.alerts:
            return "no-agent"
        return "ok"


def _value(sample: dict[str, Any]) -> float | None:
    try:
        return float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _key(sample: dict[str, Any]) -> tuple[str, int] | None:
    labels = sample.get("metric", {})
    try:
        return str(labels["cluster"]), int(labels["vmid"])
    except (KeyError, TypeError, ValueError):
        return None


def _selector(cluster: str | None, vmid: int | None) -> str:
    """Label matchers for a configured cluster name (checked at start) and a whole vmid."""
    parts = [f'cluster="{cluster}"'] if cluster else []
    if vmid is not None:
        parts.append(f'vmid="{vmid}"')
    return "{" + ",".join(parts) + "}"


def guests(prometheus: PrometheusAPI, clusters: Iterable[str], cluster: str | None = None,
           vmid: int | None = None) -> dict[tuple[str, int], GuestView]:
    """Every guest Prometheus knows of in the configured `clusters` (or the one asked for)."""
    sel = _selector(cluster, vmid)
    wanted = set(clusters)
    views: dict[tuple[str, int], GuestView] = {}

    def each(expr: str) -> Iterable[tuple[GuestView, dict[str, Any]]]:
        for sample in prometheus.instant(expr):
            key = _key(sample)
            if key is None or key[0] not in wanted:
                continue
            view = views.get(key)
            if view is None:
                view = views[key] = GuestView(*key)
            yield view, sample

    for view, sample in each(f"cluster_vmid:vmhealth_pve_guest_running:max{sel}"):
        view.running = _value(sample) == 1
        view.node = sample["metric"].get("node", "")
    for view, sample in each(f"max by (cluster, vmid, name) (vmhealth_guest_info{sel})"):
        view.name = sample["metric"].get("name", "")
    for view, sample in each(f"cluster_vmid:vmhealth_heartbeat_age:seconds{sel}"):
        view.heartbeat_age = _value(sample)
    for view, sample in each(f"cluster_vmid:vmhealth_heartbeat_stale:bool{sel}"):
        view.stale = _value(sample) == 1
    for view, sample in each(f"max by (cluster, vmid) (cluster_vmid:vmhealth_heartbeat_silent:bool{sel})"):
        view.silent = _value(sample) == 1
    for view, sample in each(f"cluster_vmid:vmhealth_guest_cpu_usage:ratio{sel}"):
        view.cpu = _value(sample)
    for view, sample in each(f"cluster_vmid:vmhealth_guest_memory_usage:ratio{sel}"):
        view.memory = _value(sample)
    names = "|".join(ALERTNAMES)
    alert_sel = sel[:-1] + ("," if len(sel) > 2 else "") + f'alertname=~"{names}"}}'
    for view, sample in each(f"ALERTS{alert_sel}"):
        state = sample["metric"].get("alertstate", "")
        name = sample["metric"].get("alertname", "")
        if view.alerts.get(name) != "firing":
            view.alerts[name] = state
    return views


def by_state(views: Iterable[GuestView]) -> dict[str, dict[str, list[GuestView]]]:
    """cluster -> state -> guests, states in STATES order, guests by vmid."""
    out: dict[str, dict[str, list[GuestView]]] = {}
    for view in sorted(views, key=lambda v: (v.cluster, v.vmid)):
        out.setdefault(view.cluster, {s: [] for s in STATES})[view.state].append(view)
    return out


@dataclass
class Chart:
    title: str
    unit: str
    points: list[tuple[float, float]]


CHARTS = (
    ("Heartbeat age", "s", "cluster_vmid:vmhealth_heartbeat_age:seconds{sel}"),
    ("CPU", "%", "100 * cluster_vmid:vmhealth_guest_cpu_usage:ratio{sel}"),
    ("Memory", "%", "100 * cluster_vmid:vmhealth_guest_memory_usage:ratio{sel}"),
    ("Proxmox: running", "", "max(cluster_vmid:vmhealth_pve_guest_running:max{sel})"),
)


def charts(prometheus: PrometheusAPI, cluster: str, vmid: int, hours: float = 24,
           now: float | None = None) -> list[Chart]:
    """The guest's last `hours` of each chart, CHART_POINTS points at most."""
    end = now or time.time()
    start = end - hours * 3600
    step = max(hours * 3600 / CHART_POINTS, 15.0)
    sel = _selector(cluster, vmid)
    out = []
    for title, unit, template in CHARTS:
        result = prometheus.range(template.format(sel=sel), start, end, step)
        points = []
        if result:
            for t, v in result[0].get("values", []):
                try:
                    points.append((float(t), float(v)))
                except (TypeError, ValueError):
                    continue
        out.append(Chart(title, unit, points))
    return out
