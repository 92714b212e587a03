"""The remediation history: one row per decision, attempt and closing, and the reads of it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from vmhealth.models.webhook import Action

from .sessions import Sessions


class History:
    """The history rows (`Action`): written as decisions are made, read by the limits, the API and the console."""

    def __init__(self, db: Sessions):
        self.db = db

    def add(self, row: Action) -> Action:
        with self.db.tx() as session:
            session.add(row)
        return row

    def update_action(self, action_id: int, **values: Any) -> None:
        with self.db.tx() as session:
            session.execute(update(Action).where(Action.id == action_id).values(**values))

    def actions_since(self, since: float) -> int:
        """Actions that touched (or may have touched) Proxmox since `since`, every replica's."""
        with self.db.read() as session:
            return int(session.scalar(select(func.count()).select_from(Action).where(
                Action.attempt.is_not(None), Action.at >= since)) or 0)

    def in_flight(self) -> int:
        with self.db.read() as session:
            return int(session.scalar(select(func.count()).select_from(Action).where(
                Action.outcome == "pending")) or 0)

    def last_touch(self, cluster: str, vmid: int) -> Action | None:
        """The guest's last action that touched Proxmox, in any incident (for the post-reset grace)."""
        with self.db.read() as session:
            return self.last_touch_in(session, cluster, vmid)

    @staticmethod
    def last_touch_in(session: Session, cluster: str, vmid: int) -> Action | None:
        return session.scalars(select(Action).where(
            Action.cluster == cluster, Action.vmid == vmid, Action.attempt.is_not(None),
        ).order_by(Action.at.desc()).limit(1)).first()

    def rows(self, cluster: str | None = None, vmid: int | None = None, since: float | None = None,
             outcome: str | None = None, limit: int = 100, before_id: int | None = None,
             until: float | None = None) -> list[Action]:
        """Newest first; `before_id` continues a page."""
        query = select(Action).order_by(Action.id.desc()).limit(limit)
        if cluster:
            query = query.where(Action.cluster == cluster)
        if vmid is not None:
            query = query.where(Action.vmid == vmid)
        if since is not None:
            query = query.where(Action.at >= since)
        if until is not None:
            query = query.where(Action.at < until)
        if outcome:
            query = query.where(Action.outcome.startswith(outcome, autoescape=True) if outcome.endswith(":")
                                or outcome == "skipped" else Action.outcome == outcome)
        if before_id is not None:
            query = query.where(Action.id < before_id)
        with self.db.read() as session:
            return list(session.scalars(query).all())
