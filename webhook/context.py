"""What the webhook's views share: its config, the database, the policy, the worker and the metrics.

The factory builds one and `appcontext.install`s it; a view reaches it with `appcontext.get(WebhookContext)`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from vmhealth.config import Config

from . import pauses
from .database import WebhookDatabase
from .metrics import WebhookMetrics
from .remediate import Decision, Remediator
from .worker import Worker

log = logging.getLogger(__name__)


@dataclass
class WebhookContext:
    """What the blueprints share: the store, the policy, the worker and the metrics."""

    config: Config
    store: WebhookDatabase
    remediator: Remediator
    metrics: WebhookMetrics
    worker: Worker | None
    worker_id: str
    lease: float
    _inline: Worker

    def run_inline(self, event_id: int) -> Decision | None:
        return self._inline.run_one(event_id)

    def state(self) -> dict[str, Any] | None:
        """The database-backed gauges; None when the database cannot be read (they are left out)."""
        try:
            return self._state()
        except SQLAlchemyError as exc:
            log.warning("metrics without database-backed gauges: %s", str(exc).splitlines()[0])
            return None

    def _state(self) -> dict[str, Any]:
        return {
            "incidents": self.store.incidents.open_incident_attempts(),
            "quarantined": [(q.cluster, q.vmid) for q in self.store.incidents.all_quarantined()],
            "circuit": dict(self.remediator.circuit),
            "pauses": [(p.scope, p.since) for p in pauses.active(self.store)],
            "pause_alert_after": float(self.config.webhook.policy.pause_alert_after),
            "queue": self.store.queue.pending_events(),
        }

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.store.engine.dispose()
