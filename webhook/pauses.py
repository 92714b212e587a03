"""Automatic remediation paused at runtime by a person, fleet-wide or per cluster.

The pause lives in the database, so every replica obeys it from its next decision; pausing and
resuming are history rows of their own (`paused`, `resumed`), so the history says why a burst of
alerts was refused as `skipped:paused`. A manual reset is a person's decision and is not paused.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vmhealth.models.webhook import Action, Pause

from .database import WebhookDatabase

FLEET = "*"  # the scope of a pause of every cluster


def describe(scope: str) -> str:
    return "every cluster" if scope == FLEET else f"cluster {scope}"


def pause(store: WebhookDatabase, scope: str, actor: str, reason: str, now: float) -> bool:
    """Pause `scope`; False when it already was (the first pause and its reason stand)."""
    with store.tx() as session:
        if session.get(Pause, scope) is not None:
            return False
        try:
            with session.begin_nested():
                session.add(Pause(scope=scope, since=now, actor=actor, reason=reason[:2000]))
        except IntegrityError:
            return False
        session.add(Action(at=now, cluster="" if scope == FLEET else scope, outcome="paused", actor=actor,
                           reason=reason[:2000],
                           error=f"automatic remediation paused for {describe(scope)}: {reason[:500]}"))
    return True


def resume(store: WebhookDatabase, scope: str, actor: str, reason: str, now: float) -> Pause | None:
    """End the pause of `scope`; the pause that ended, or None when there was none."""
    with store.tx() as session:
        found = session.get(Pause, scope)
        if found is None:
            return None
        session.delete(found)
        session.flush()
        session.add(Action(at=now, cluster="" if scope == FLEET else scope, outcome="resumed", actor=actor,
                           reason=reason[:2000],
                           error=f"automatic remediation resumed for {describe(scope)} after "
                                 f"{now - found.since:.0f}s paused: {reason[:500]}"))
        session.expunge(found)
    return found


def active(store: WebhookDatabase) -> list[Pause]:
    """Every pause in force, the fleet's first."""
    with store.read() as session:
        rows = list(session.scalars(select(Pause)).all())
        session.expunge_all()
    return sorted(rows, key=lambda p: (p.scope != FLEET, p.scope))


def paused_in(session: Session, cluster: str) -> Pause | None:
    """The pause that holds `cluster`'s automatic remediation, fleet-wide first."""
    return session.get(Pause, FLEET) or session.get(Pause, cluster)


def paused(store: WebhookDatabase, cluster: str) -> Pause | None:
    with store.read() as session:
        found = paused_in(session, cluster)
        if found is not None:
            session.expunge(found)
        return found
