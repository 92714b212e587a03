"""What the console shows of the remediation side: open incidents, quarantines and the brakes.

All of it comes from the webhook's database (and its configuration), so every replica shows the
same; only the circuit breaker is this replica's latest judgement, as in /metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from vmhealth.models.webhook import Action, Incident, Pause, Quarantine

from . import pauses

MAX_ROWS = 1000  # a page never lists more open incidents than this


@dataclass
class IncidentView:
    id: int
    cluster: str
    vmid: int
    alertname: str
    attempts: int
    opened_at: float
    next_attempt_at: float | None
    state: str
    closed_at: float | None
    last_outcome: str
    last_detail: str


@dataclass
class Brakes:
    enabled: bool
    dry_run: bool
    actions_last_hour: int
    max_actions_per_hour: int
    circuit_open: list[str]
    pauses: list[Pause]
    max_attempts: int

    @property
    def rate_limited(self) -> bool:
        return self.actions_last_hour >= self.max_actions_per_hour


def incidents(store: Any, cluster: str | None = None, vmid: int | None = None, open_only: bool = True,
              limit: int = MAX_ROWS) -> list[IncidentView]:
    """Incidents, newest first, each with the outcome of its latest decision."""
    query = select(Incident).order_by(Incident.id.desc()).limit(limit)
    if open_only:
        query = query.where(Incident.state == "open")
    if cluster:
        query = query.where(Incident.cluster == cluster)
    if vmid is not None:
        query = query.where(Incident.vmid == vmid)
    with store.read() as session:
        rows = list(session.scalars(query).all())
        last: dict[int, Action] = {}
        if rows:
            newest = (select(func.max(Action.id)).where(Action.incident_id.in_([r.id for r in rows]))
                      .group_by(Action.incident_id))
            for action in session.scalars(select(Action).where(Action.id.in_(newest))):
                last[action.incident_id] = action
        return [IncidentView(r.id, r.cluster, r.vmid, r.alertname, r.attempts, r.opened_at, r.next_attempt_at,
                             r.state, r.closed_at, last[r.id].outcome if r.id in last else "",
                             (last[r.id].error or last[r.id].reason or "") if r.id in last else "")
                for r in rows]


def quarantines(store: Any) -> list[Quarantine]:
    with store.read() as session:
        rows = list(session.scalars(select(Quarantine).order_by(Quarantine.since.desc()).limit(MAX_ROWS)).all())
        session.expunge_all()
    return rows


def brakes(ctx: Any) -> Brakes:
    limits = ctx.config.webhook.policy
    return Brakes(enabled=bool(limits.enabled), dry_run=bool(limits.dry_run),
                  actions_last_hour=ctx.store.history.actions_since(time.time() - 3600),
                  max_actions_per_hour=int(limits.max_actions_per_hour),
                  circuit_open=sorted(c for c, v in ctx.remediator.circuit.items() if v),
                  pauses=pauses.active(ctx.store), max_attempts=int(limits.max_attempts))
