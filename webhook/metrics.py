"""The webhook's /metrics: counters kept in the process, gauges read from the database at scrape.

Gauges about incidents, quarantines and the queue come from the database on each scrape, so every
replica on one PostgreSQL shows the same truth and a restart loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vmhealth.process_counters import PROCESS_COUNTERS


class WebhookMetrics:
    """The registry of one webhook app, with the counters the code increments."""

    def __init__(self, clusters: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_ProcessCounters())
        self.actions_total = Counter(
            "vmhealth_remediation_actions", "Remediation decisions by action and result "
            "(success, failed, unknown, dry-run, skipped:<reason>, closed:expired).", ["cluster", "action", "result"],
            registry=self.registry)
        self.notifications_total = Counter(
            "vmhealth_webhook_notifications", "Alerts received, by alert status and what became of them.",
            ["status", "result"], registry=self.registry)
        self.latency = Histogram(
            "vmhealth_remediation_action_latency_seconds", "From receiving the alert to calling Proxmox.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600), registry=self.registry)
        self.guest_agent_forbidden_total = Counter(
            "vmhealth_webhook_guest_agent_check_forbidden", "Guest-agent pings Proxmox refused with 403: the "
            "webhook's token lacks VM.GuestAgent.Audit (PVE 9) or VM.Monitor (PVE 8), so the check gives no "
            "evidence.", ["cluster"], registry=self.registry)
        # Series that exist from the start at 0, so that increase() counts the first reset after a start.
        for cluster in clusters:
            for result in ("success", "failed", "unknown"):
                self.actions_total.labels(cluster, "reset", result)
            self.guest_agent_forbidden_total.labels(cluster)
        for status, result in (("firing", "recorded"), ("firing", "duplicate"), ("resolved", "resolved")):
            self.notifications_total.labels(status, result)

    def action(self, cluster: str, action: str, result: str) -> None:
        self.actions_total.labels(cluster, action, result).inc()

    def notification(self, status: str, result: str, count: int = 1) -> None:
        self.notifications_total.labels(status, result).inc(count)

    def guest_agent_forbidden(self, cluster: str) -> None:
        self.guest_agent_forbidden_total.labels(cluster).inc()

    def add_state(self, read: Callable[[], dict[str, Any] | None]) -> None:
        self.registry.register(_StateCollector(read))


class _ProcessCounters(Collector):
    """What the gunicorn worker refused or cut, and the failed authentications (`vmhealth.process_counters`)."""

    def collect(self) -> Iterable[Metric]:
        families = []
        for counter in PROCESS_COUNTERS:
            family = CounterMetricFamily(counter.family.removesuffix("_total"), counter.help, labels=counter.labels)
            for values, value in sorted(counter.snapshot().items()):
                family.add_metric(list(values), value)
            families.append(family)
        return families


class _StateCollector(Collector):
    """Fresh gauge families from `read()` on every scrape."""

    def __init__(self, read: Callable[[], dict[str, Any] | None]):
        self.read = read

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        state = self.read()
        if state is None:
            return []
        attempts = GaugeMetricFamily("vmhealth_remediation_incident_attempts",
                                     "Attempts so far of each open incident.", labels=["cluster", "vmid"])
        for cluster, vmid, count in state["incidents"]:
            attempts.add_metric([cluster, str(vmid)], count)
        quarantined = GaugeMetricFamily("vmhealth_remediation_quarantined",
                                        "1 while a guest waits for a person's release after its attempts ran out.",
                                        labels=["cluster", "vmid"])
        for cluster, vmid in state["quarantined"]:
            quarantined.add_metric([cluster, str(vmid)], 1)
        circuit = GaugeMetricFamily("vmhealth_remediation_circuit_open",
                                    "1 while too many of the cluster's guests are hung to act on any.",
                                    labels=["cluster"])
        for cluster, value in sorted(state["circuit"].items()):
            circuit.add_metric([cluster], value)
        depth = GaugeMetricFamily("vmhealth_remediation_queue_depth", "Alert events waiting for or in the worker.")
        depth.add_metric([], state["queue"])
        paused = GaugeMetricFamily("vmhealth_remediation_paused_since_seconds",
                                   "When a person paused automatic remediation (scope \"*\": every cluster); "
                                   "present only while paused.", labels=["scope"])
        for scope, since in state["pauses"]:
            paused.add_metric([scope], since)
        limit = GaugeMetricFamily("vmhealth_remediation_pause_alert_after_seconds",
                                  "webhook.policy.pause_alert_after: a pause longer than this fires "
                                  "VMHealthRemediationPaused.")
        limit.add_metric([], state["pause_alert_after"])
        return [attempts, quarantined, circuit, depth, paused, limit]
