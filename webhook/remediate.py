"""One decision for one alert event: gather the live facts, apply the policy, act at most once.

The order matters: cheap refusals that need no network first (kill switch, quarantine, cooldown,
rate limit), then one read of /cluster/resources and /cluster/status and the guest's
`status/current`, then the two last checks of the evidence (I/O since the rules judged the guest
idle, from the counters already read; a ping of its QEMU guest agent), then the attempt slot is
claimed in the database and only then is Proxmox told to act. No transaction is open while Proxmox
is called. Every branch writes one history row, with the evidence it was based on. The worker has
the refusals that need the database only (kill switch, quarantine, attempts used up, cooldown)
decided in bulk while it claims (`claim`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from vmhealth.config import ClusterConfig, ThresholdsConfig, WebhookConfig
from vmhealth.models.webhook import Action, AlertEvent, Incident, Pause, Quarantine
from vmhealth.pve import PveClient, PveError

from . import actions, pauses, policy
from .database import WebhookDatabase
from .heartbeat import HeartbeatReader
from .history import History
from .incidents import Incidents
from .metrics import WebhookMetrics
from .payload import EVIDENCE_KEYS
from .policy import Skip

log = logging.getLogger(__name__)

# Refusals decided in one claiming transaction: enough to spare a notification of hundreds of alerts
# most of its transactions, few enough that the write lock is held for tens of milliseconds.
REFUSAL_BATCH = 100


@dataclass
class Decision:
    """What one event led to, for the worker and the manual API."""

    outcome: str
    detail: str
    name: str
    attempts: int
    retry_after: float | None
    action_id: int | None = None


class Remediator:
    """Applies `webhook.policy` (held as `limits`) to events, with one PveClient per cluster.

    `exporter_token` is the exporter's read token, for reading heartbeat ages from `webhook.exporter_urls`.
    """

    def __init__(self, webhook: WebhookConfig, clusters: list[ClusterConfig], thresholds: ThresholdsConfig,
                 store: WebhookDatabase, metrics: WebhookMetrics, exporter_token: str | None = None,
                 task_poll_interval: float = 1.0, settle: float = 5.0):
        self.webhook = webhook
        self.limits = webhook.policy
        self.store = store
        self.metrics = metrics
        self.clients = {cluster.name: PveClient(cluster) for cluster in clusters}
        self.task_poll_interval = task_poll_interval
        self.settle = settle
        self.lease = float(webhook.claim_lease)
        self.circuit: dict[str, int] = {name: 0 for name in self.clients}
        self.io_idle_rate = float(thresholds.io_idle_bytes_per_second)
        self.stale_timeout = float(thresholds.stale_timeout)
        client_cert = (webhook.client_cert_file, webhook.client_key_file) if webhook.client_cert_file else None
        self.heartbeats = HeartbeatReader(webhook.prometheus_url, webhook.exporter_urls, ca_bundle=webhook.ca_bundle,
                                          client_cert=client_cert, exporter_token=exporter_token)
        self._lock = threading.Lock()
        self._agent_forbidden_logged: set[str] = set()  # clusters whose 403 on agent/ping was logged
        self.resources = NotificationReads()
        self.incident_expiry = float(self.limits.incident_expiry)

    # --- entry point -----------------------------------------------------------------------------
    def process(self, event: AlertEvent) -> Decision:
        now = time.time()
        if event.status != "firing" or not event.action:
            return Decision("ignored", "not a firing alert with an action label", event.name, 0, None)
        base = self._base(event, now)
        if event.action not in ("reset",):
            return self._skip(base, Skip("unknown-action", f"action={event.action!r} is not one vmhealth takes"),
                              0, None)
        if event.vmid is None:
            return self._skip(base, Skip("no-vmid", "the alert has no vmid label"), 0, None)
        if event.cluster not in self.clients:
            skip = Skip("unknown-cluster", f"cluster {event.cluster!r} is not configured")
            decision = self._skip(base, skip, 0, None)
            self._close_for(event, skip, None)
            return decision
        incident = self.store.incidents.open_incident(event, now)
        if incident is None:
            return Decision("ignored", "the alert resolved before it was acted on", event.name, 0, None)
        base.incident_id = incident.id
        self._settle_unfinished(incident, now)
        incident = self.store.incidents.incident(incident.id)
        decision = self._decide(event, incident, base, now)
        if incident.alertname == "manual":
            # A reset a person asked for, with no alert behind it: its incident ends with it.
            self.store.incidents.close_incident(incident.id, time.time())
        elif decision.outcome.startswith("skipped:"):
            self._close_for(event, Skip(decision.outcome.removeprefix("skipped:"), decision.detail), incident.id)
        return decision

    def _close_for(self, event: AlertEvent, skip: Skip, incident_id: int | None) -> None:
        """A final refusal about a guest no configured Proxmox lists ends its incident: it would only
        ever be refused again, and counted meanwhile. The closing is a history row of its own."""
        if skip.reason not in policy.CLOSING or event.cluster is None or event.vmid is None:
            return
        closed = self.store.incidents.close(event.cluster, event.vmid, time.time(), f"closed:{skip.reason}", "webhook",
                                  f"{skip.reason}: {skip.detail}", incident_id=incident_id, event_id=event.id)
        if closed is not None:
            log.info("%s/%s: incident %s closed (%s)", event.cluster, event.vmid, closed, skip.reason)

    def _base(self, event: AlertEvent, now: float) -> Action:
        """The history row of a decision on `event`, before its outcome is known."""
        return Action(at=now, cluster=event.cluster or "", vmid=event.vmid, node=event.node, name=event.name,
                      fingerprint=event.fingerprint, event_id=event.id, actor=event.actor,
                      reason=event.reason or event.alertname, forced=event.force, received_at=event.received_at,
                      evidence=_dump(judged_evidence(given_evidence(event))))

    # --- refusals decided in bulk, while claiming ------------------------------------------------
    def claim(self, worker: str, free: int, now: float, batch: int = REFUSAL_BATCH) -> tuple[list[int], int]:
        """Claim up to `free` events for the pool; on the way, decide up to `batch` refusals that need no Proxmox.

        The kill switch, a quarantine, attempts used up and the cooldowns refuse an alert from the
        database alone: such events are decided in the claiming transaction, the history row and the
        finished event committed together, instead of taking the pool's turns one by one. Everything
        else (including events whose incident has an attempt to settle first) goes to the pool and
        `process`. Returns the events claimed for the pool and the number of refusals decided."""
        claimed, refused = self.store.queue.claim_or_refuse(worker, free, now, self.lease, self._refusal_in, batch)
        for row in refused:
            self.metrics.action(row.cluster, "none", row.outcome)
            log.info("%s/%s: %s (%s)", row.cluster, row.vmid, row.outcome, row.error)
        return claimed, len(refused)

    def _refusal_in(self, session: Session, event: AlertEvent,
                    incident: Incident) -> tuple[Action, float | None] | None:
        """Inside the claiming transaction: the refusal `process` would decide without Proxmox, or None.

        `incident` is the guest's open incident, with no attempt left to settle."""
        if (event.status != "firing" or event.action != "reset" or event.cluster not in self.clients
                or event.vmid is None or event.alertname == "manual"):
            return None
        now = time.time()
        refusal = self._refusal(event, incident, now,
                                lambda: Incidents.quarantined_in(session, incident.cluster, incident.vmid),
                                lambda: History.last_touch_in(session, incident.cluster, incident.vmid),
                                lambda: pauses.paused_in(session, incident.cluster))
        if refusal is None:
            return None
        skip, retry_after = refusal
        row = self._base(event, now)
        row.incident_id, row.outcome, row.error = incident.id, skip.outcome, skip.detail
        return row, retry_after if retry_after is not None else now + float(self.limits.retry_interval)

    # --- the policy, in order --------------------------------------------------------------------
    def _refusal(self, event: AlertEvent, incident: Incident, now: float,
                 quarantined: Callable[[], Quarantine | None],
                 last_touch: Callable[[], Action | None],
                 paused: Callable[[], Pause | None]) -> tuple[Skip, float | None] | None:
        """The refusals that need no Proxmox call and no count: kill switch, pause, quarantine, attempts,
        cooldowns. A person's own reset is not paused."""
        limits = self.limits
        if not limits.enabled:
            return Skip("disabled", "webhook.policy.enabled is false (kill switch)"), None
        pause = paused() if event.alertname != "manual" else None
        if pause is not None:
            return Skip("remediation-paused", f"automatic remediation of {pauses.describe(pause.scope)} paused by "
                        f"{pause.actor} since {time.ctime(pause.since)}: {pause.reason}"), None
        quarantine = quarantined()
        if quarantine is not None and not event.force:
            return Skip("quarantined", f"since {time.ctime(quarantine.since)}: {quarantine.reason}"
                        " - release it with `vmhealth release`"), None
        if incident.attempts >= limits.max_attempts and not event.force:
            return Skip("max-attempts", f"{incident.attempts} attempts made"), None
        if incident.next_attempt_at is not None and incident.next_attempt_at > now:
            return Skip("cooldown", f"next attempt no sooner than {incident.next_attempt_at - now:.0f}s from now"), \
                incident.next_attempt_at
        last = last_touch()
        if last is not None and last.incident_id != incident.id and last.at + limits.cooldown > now:
            return (Skip("cooldown", f"touched {now - last.at:.0f}s ago by an earlier incident"),
                    last.at + limits.cooldown)
        return None

    def _limits(self, in_flight: int, last_hour: int) -> Skip | None:
        """The fleet-wide limits: judged first from a plain read, and again inside the claim (atomically)."""
        limits = self.limits
        skip = policy.check_rate(last_hour, limits.max_actions_per_hour)
        if skip is None and in_flight >= limits.max_concurrent_actions:
            skip = Skip("busy", f"{limits.max_concurrent_actions} actions already in flight")
        return skip

    def _decide(self, event: AlertEvent, incident: Incident, base: Action, now: float) -> Decision:
        limits = self.limits
        cluster, vmid = incident.cluster, incident.vmid
        refusal = self._refusal(event, incident, now, lambda: self.store.incidents.quarantined(cluster, vmid),
                                lambda: self.store.history.last_touch(cluster, vmid),
                                lambda: pauses.paused(self.store, cluster))
        if refusal is not None:
            return self._skip(base, refusal[0], incident, refusal[1])
        skip = self._limits(self.store.history.in_flight(), self.store.history.actions_since(now - 3600))
        if skip is not None:
            return self._skip(base, skip, incident)
        client = self.clients[cluster]
        try:
            facts = self._facts(client, vmid, self.resources.get((cluster, event.received_at), client.guests))
        except PveError as exc:
            return self._skip(base, Skip("proxmox-unreachable", str(exc)), incident)
        if isinstance(facts, Skip):
            return self._skip(base, facts, incident)
        resource, status, kind, node, resources = facts
        base.node = node
        base.name = resource.get("name") or status.get("name") or base.name
        # The guest's own status/current is read for this decision; the list may be the notification's.
        live = policy.io_bytes_live(status)
        live = policy.io_bytes_live(resource) if live is None else live
        _note(base, io_bytes_total_live=live, status=status.get("status"), qmpstatus=status.get("qmpstatus"),
              uptime=status.get("uptime"))
        skip = policy.check_allowed(limits, vmid, policy.guest_tags(resource, status))
        if skip is None:
            hung = len(self.store.incidents.open_incident_vmids(cluster) & policy.listed_running(resources))
            skip = policy.check_circuit(hung, policy.count_guests(resources), limits.max_hung_fraction,
                                        limits.circuit_min_hung)
            self.circuit[cluster] = 1 if skip is not None else 0
        if skip is None:
            skip = policy.check_guest(kind, status, limits.boot_grace)
        if skip is None:
            given = given_evidence(event)
            skip = policy.check_active(given.get("io_bytes_total"), given.get("io_judged_at", event.received_at),
                                       live, self.io_idle_rate, time.time())
        if skip is None:
            skip = self._check_heartbeat(base, cluster, vmid)
        if skip is None:
            skip = self._check_guest_agent(client, base, kind, node, vmid, resource, status)
        if skip is not None:
            return self._skip(base, skip, incident)
        action = policy.action_for(kind)
        base.action = action
        if limits.dry_run:
            base.outcome = "dry-run"
            base.reason = f"would {action} {kind}/{vmid} on {node}"
            self.store.history.add(base)
            self.metrics.action(cluster, action, "dry-run")
            return Decision("dry-run", base.reason, base.name, incident.attempts, now + limits.cooldown, base.id)
        return self._act(event, incident, base, client, kind, node, status, now)

    def _check_heartbeat(self, base: Action, cluster: str, vmid: int) -> Skip | None:
        """The guest's heartbeat age from Prometheus or the exporters, where one is configured."""
        if not self.heartbeats.configured:
            return None
        read = self.heartbeats.age(cluster, vmid)
        _note(base, heartbeat_age=None if read.age is None else round(read.age, 1), heartbeat_source=read.source)
        if read.error:
            _note(base, heartbeat_error=read.error)
            log.info("%s/%s: heartbeat age unknown (%s), going on without it", cluster, vmid, read.error)
        return policy.check_heartbeat(read.age, self.stale_timeout)

    def _check_guest_agent(self, client: PveClient, base: Action, kind: str, node: str, vmid: int,
                           resource: dict[str, Any], status: dict[str, Any]) -> Skip | None:
        """Ping the QEMU guest agent where one is configured: an answer is a running guest OS.

        Any failure to get an answer (not running, not configured, a timeout, a 403, no connection)
        is no evidence either way, and the decision goes on; what happened is kept in the evidence.
        The ping is bounded by the cluster's per-call timeout and holds no lock or transaction."""
        error: PveError | None = None
        if kind != "qemu":
            answer = "not-qemu"
        elif self.limits.guest_agent_check == "off":
            answer = "off"
        elif not policy.agent_configured(status, resource):
            answer = "not-configured"
        else:
            try:
                client.agent_ping(node, vmid)
            except PveError as exc:
                error = exc
            answer = policy.guest_agent_answer(error)
        _note(base, guest_agent=answer)
        if answer == "forbidden":
            self._agent_forbidden(base.cluster, error)
        elif answer.startswith("error:"):
            log.info("%s/%s: guest-agent ping gave no answer, going on without it: %s", base.cluster, vmid, error)
        return policy.check_guest_agent(answer)

    def _agent_forbidden(self, cluster: str, error: PveError | None) -> None:
        """Counted every time; logged once per cluster and process, naming the privilege to add."""
        self.metrics.guest_agent_forbidden(cluster)
        with self._lock:
            first = cluster not in self._agent_forbidden_logged
            self._agent_forbidden_logged.add(cluster)
        if first:
            log.warning("cluster %s: the webhook's Proxmox token may not ping the QEMU guest agent (%s), so resets "
                        "go ahead without that check; add VM.GuestAgent.Audit (PVE 9) or VM.Monitor (PVE 8) to its "
                        "role, or set webhook.policy.guest_agent_check: off", cluster, error)

    @staticmethod
    def _facts(client: PveClient, vmid: int,
               resources: list[dict[str, Any]]) -> Skip | tuple[dict, dict, str, str, list[dict[str, Any]]]:
        """Live state at decision time: where the guest is (in `resources`), its node and its own status."""
        resource = policy.find_guest(resources, vmid)
        if resource is None:
            return Skip("not-found", f"Proxmox lists no guest {vmid}")
        if int(resource.get("template", 0) or 0):
            return Skip("template", "templates are never reset")
        kind, node = resource["type"], resource.get("node", "")
        skip = policy.check_node(client.cluster_status(), node)
        if skip is not None:
            return skip
        status = client.guest_status(node, kind, vmid)
        return resource, status, kind, node, resources

    def _act(self, event: AlertEvent, incident: Incident, base: Action, client: PveClient, kind: str, node: str,
             status: dict, now: float) -> Decision:
        limits = self.limits
        attempt = incident.attempts + 1
        next_at = now + policy.cooldown_after(attempt, limits.cooldown, limits.max_cooldown)
        row = self.store.incidents.claim_attempt(incident, now, next_at, base, self._limits)
        if row is None:
            return Decision("claimed-elsewhere", "another worker took this attempt", base.name, incident.attempts,
                            None)
        if isinstance(row, Skip):  # another replica's claims filled the slots since the check in _decide
            base.action = ""
            return self._skip(base, row, incident)
        action = base.action
        acted_at = time.time()
        self.metrics.latency.observe(max(acted_at - (event.received_at or acted_at), 0.0))
        self.store.history.update_action(row.id, acted_at=acted_at)
        result = actions.act(client, node, kind, incident.vmid, action, limits.task_timeout, self.task_poll_interval,
                             self.settle)
        if result.outcome == "failed" and limits.escalate and result.upid and not policy.ha_managed(status):
            self._finish(row, result)
            self.metrics.action(incident.cluster, action, result.outcome)
            action = "stop+start"
            row = self.store.history.add(Action(
                at=time.time(), cluster=base.cluster, node=node, vmid=base.vmid, name=base.name,
                fingerprint=base.fingerprint, event_id=base.event_id, incident_id=incident.id, action=action,
                outcome="pending", actor=base.actor, reason=f"escalation after: {result.error}", forced=base.forced,
                received_at=base.received_at, acted_at=time.time(), evidence=base.evidence))
            result = actions.escalate(client, node, kind, incident.vmid, limits.task_timeout, self.task_poll_interval)
        self._finish(row, result)
        self.metrics.action(incident.cluster, action, result.outcome)
        if result.outcome != "success" and attempt >= limits.max_attempts and not event.force:
            self.store.incidents.quarantine(incident.cluster, incident.vmid, incident.id, attempt,
                                  f"{attempt} attempt(s), last: {actions.describe(result)}", time.time())
        log.info("%s %s/%s on %s: %s %s", action, incident.cluster, incident.vmid, node, result.outcome,
                 actions.describe(result))
        return Decision(result.outcome, actions.describe(result), base.name, attempt, next_at, row.id)

    def _finish(self, row: Action, result: actions.Result) -> None:
        self.store.history.update_action(row.id, outcome=result.outcome, upid=result.upid, exitstatus=result.exitstatus,
                                 error=result.error, finished_at=time.time())

    def _settle_unfinished(self, incident: Incident, now: float) -> None:
        """Before anything else: find out what became of attempts whose outcome was never learned.

        A task started once the next attempt was sent, or recorded for another attempt, is not this
        attempt's: crediting it would count one reset twice."""
        unfinished = self.store.incidents.unfinished_attempts(incident.id, now - self.lease)
        attempts = self.store.incidents.attempts_of(incident.id) if unfinished else []
        for row in unfinished:
            client = self.clients[incident.cluster]
            kind = "lxc" if row.action == "reboot" else "qemu"
            action = row.action if row.action in ("reset", "reboot") else policy.action_for(kind)
            since = (row.acted_at or row.at) - 5
            later = [a.acted_at or a.at for a in attempts if (a.attempt or 0) > (row.attempt or 0)]
            taken = frozenset(a.upid for a in attempts if a.id != row.id and a.upid)
            result = actions.recover(client, row.node, kind, incident.vmid, action, since, self.limits.task_timeout,
                                     self.task_poll_interval, f"attempt {row.attempt} was {row.outcome}",
                                     until=min(later) - 5 if later else None, taken=taken)
            if result.outcome == "unknown" and row.outcome == "unknown":
                continue
            self._finish(row, result)
            log.info("attempt %s of %s/%s settled as %s", row.attempt, incident.cluster, incident.vmid,
                     result.outcome)

    def settle_interrupted(self, now: float) -> int:
        """Settle attempts left pending past the claim lease, also of incidents that closed since.

        Settling otherwise waits for the next event of the incident; when the alert resolved first,
        none comes, and the row would stay pending, counted as in flight, for ever."""
        incidents = self.store.incidents.interrupted_incidents(now - self.lease)
        for incident in incidents:
            self._settle_unfinished(incident, now)
        return len(incidents)

    def expire_incidents(self, now: float) -> int:
        """Close incidents that heard nothing for longer than webhook.policy.incident_expiry."""
        rows = self.store.incidents.expire(now, self.incident_expiry)
        for row in rows:
            self.metrics.action(row.cluster, "none", row.outcome)
            log.info("%s/%s: incident %s closed: %s", row.cluster, row.vmid, row.incident_id, row.reason)
        return len(rows)

    def _skip(self, base: Action, skip: Skip, incident: Incident | int | None,
              retry_after: float | None = None) -> Decision:
        now = time.time()
        base.outcome = skip.outcome
        base.error = skip.detail
        self.store.history.add(base)
        self.metrics.action(base.cluster, base.action or "none", skip.outcome)
        attempts = incident.attempts if isinstance(incident, Incident) else 0
        retry = retry_after if retry_after is not None else now + float(self.limits.retry_interval)
        log.info("%s/%s: %s (%s)", base.cluster, base.vmid, skip.outcome, skip.detail)
        return Decision(skip.outcome, skip.detail, base.name, attempts, retry, base.id)


class NotificationReads:
    """One /cluster/resources read per cluster and notification, shared by the decisions on its alerts.

    The alerts of one notification are recorded in one transaction with one `received_at` (a rearmed
    event takes its rearming notification's), so (cluster, received_at) names the batch. The first
    decision reads; the others of the batch, in any thread, wait for and reuse that read, also when
    it failed (one error for the batch, not one per alert). The newest `keep` batches are kept.
    Everything that must be current for one guest (its status, its node's, the quorum) is still read
    for each decision."""

    def __init__(self, keep: int = 64):
        self.keep = keep
        self._lock = threading.Lock()
        self._batches: OrderedDict[tuple[str, float | None], _Read] = OrderedDict()

    def get(self, key: tuple[str, float | None], read: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        with self._lock:
            entry = self._batches.get(key)
            if entry is None:
                entry = self._batches[key] = _Read()
                while len(self._batches) > self.keep:
                    self._batches.popitem(last=False)
        with entry.lock:
            if not entry.done:
                try:
                    entry.value = read()
                except PveError as exc:
                    entry.error = exc
                entry.done = True
        if entry.error is not None:
            raise entry.error
        return entry.value


@dataclass
class _Read:
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False
    value: list[dict[str, Any]] = field(default_factory=list)
    error: PveError | None = None


def given_evidence(event: AlertEvent) -> dict[str, float]:
    """The rules' evidence stored with the event (payload.EVIDENCE_KEYS); anything unreadable is not given."""
    try:
        raw = json.loads(event.evidence) if event.evidence else {}
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: float(v) for k, v in raw.items()
            if k in EVIDENCE_KEYS and isinstance(v, int | float) and not isinstance(v, bool)}


def judged_evidence(given: dict[str, float]) -> dict[str, Any]:
    """The alert's evidence under the history's names (`io_bytes_total` is what the rules judged on)."""
    names = {"io_bytes_total": "io_bytes_total_judged"}
    return {names.get(key, key): value for key, value in given.items()}


def _note(row: Action, **values: Any) -> None:
    """Add what a decision was based on to its history row's evidence (None values are not known)."""
    evidence = json.loads(row.evidence) if row.evidence else {}
    evidence.update({k: v for k, v in values.items() if v is not None})
    row.evidence = _dump(evidence)


def _dump(evidence: dict[str, Any]) -> str | None:
    return json.dumps(evidence, sort_keys=True) if evidence else None
