"""The webhook's tables: alert events (the work queue), incidents, quarantines and the action history.

Exactly-once is enforced here, by the database, not by locks in one process:
- `webhook_event` is unique on the Alertmanager idempotency key (fingerprint, startsAt, status), so a
  duplicate delivery finds its row instead of adding work;
- `webhook_incident.open_key` is "cluster/vmid" while the incident is open and NULL once closed, and
  unique, so one guest has at most one open incident whatever the number of webhook replicas;
- `webhook_action` is unique on (incident_id, attempt): an attempt slot is claimed by inserting its
  row before Proxmox is called, so no attempt is ever carried out twice.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from vmhealth.db import Base


class AlertEvent(Base):
    """One alert state change as Alertmanager sent it; pending ones are the worker's queue."""

    __tablename__ = "webhook_event"
    __table_args__ = (
        UniqueConstraint("fingerprint", "starts_at", "status", name="uq_webhook_event_key"),
        Index("ix_webhook_event_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(128))
    starts_at: Mapped[str] = mapped_column(String(64))  # as sent, normalised to UTC RFC 3339
    status: Mapped[str] = mapped_column(String(16))  # firing | resolved
    alertname: Mapped[str] = mapped_column(String(255), default="")
    cluster: Mapped[str | None] = mapped_column(String(128), nullable=True)
    vmid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    node: Mapped[str] = mapped_column(String(128), default="")
    name: Mapped[str] = mapped_column(String(255), default="")
    action: Mapped[str] = mapped_column(String(32), default="")  # the alert's `action` label, "" = none
    labels: Mapped[str] = mapped_column(Text, default="{}")
    actor: Mapped[str] = mapped_column(String(255), default="alertmanager")
    reason: Mapped[str] = mapped_column(Text, default="")
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[float] = mapped_column(Float)
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    # pending -> claimed -> done; a done firing event is re-armed (pending) by a later delivery once
    # retry_after has passed, so a guest that stays hung gets its next attempt.
    state: Mapped[str] = mapped_column(String(16), default="pending")
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    claimed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    retry_after: Mapped[float | None] = mapped_column(Float, nullable=True)
    result: Mapped[str] = mapped_column(Text, default="")
    # JSON of the rules' evidence annotations of the latest delivery (payload.EVIDENCE_KEYS), NULL when none
    evidence: Mapped[str | None] = mapped_column(Text, nullable=True)


class Incident(Base):
    """One guest being hung, from the first firing notification to the resolved one."""

    __tablename__ = "webhook_incident"
    __table_args__ = (Index("ix_webhook_incident_vm", "cluster", "vmid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster: Mapped[str] = mapped_column(String(128))
    vmid: Mapped[int] = mapped_column(Integer)
    open_key: Mapped[str | None] = mapped_column(String(160), unique=True, nullable=True)
    fingerprint: Mapped[str] = mapped_column(String(128), default="")
    starts_at: Mapped[str] = mapped_column(String(64), default="")
    alertname: Mapped[str] = mapped_column(String(255), default="")
    state: Mapped[str] = mapped_column(String(16), default="open")  # open | closed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[float] = mapped_column(Float)
    closed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_attempt_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    next_attempt_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The last notification about the guest while the incident is open (NULL before wh0004: opened_at
    # counts); silence longer than webhook.policy.incident_expiry closes the incident as expired.
    last_notified_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Quarantine(Base):
    """A guest whose incident ran out of attempts: never touched again until a person releases it."""

    __tablename__ = "webhook_quarantine"

    cluster: Mapped[str] = mapped_column(String(128), primary_key=True)
    vmid: Mapped[int] = mapped_column(Integer, primary_key=True)
    since: Mapped[float] = mapped_column(Float)
    incident_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(Text, default="")


class Action(Base):
    """One decision, acted on or refused: the remediation history."""

    __tablename__ = "webhook_action"
    __table_args__ = (
        UniqueConstraint("incident_id", "attempt", name="uq_webhook_action_attempt"),
        Index("ix_webhook_action_vm", "cluster", "vmid", "at"),
        Index("ix_webhook_action_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    cluster: Mapped[str] = mapped_column(String(128), default="")
    node: Mapped[str] = mapped_column(String(128), default="")
    vmid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    fingerprint: Mapped[str] = mapped_column(String(128), default="")
    event_id: Mapped[int | None] = mapped_column(ForeignKey("webhook_event.id"), nullable=True)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("webhook_incident.id"), nullable=True)
    # The attempt number within the incident for actions that touch Proxmox; NULL for decisions
    # that did not (skips, dry-runs), which may repeat freely.
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(32), default="")  # reset | reboot | stop+start | ""
    outcome: Mapped[str] = mapped_column(String(64))  # pending|success|failed|unknown|dry-run|skipped:<r>
    upid: Mapped[str | None] = mapped_column(String(255), nullable=True)
    exitstatus: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str] = mapped_column(String(255), default="alertmanager")
    reason: Mapped[str] = mapped_column(Text, default="")
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    acted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # JSON of what the decision was based on: the alert's evidence and, once read, Proxmox's live state
    # (I/O counters, guest-agent answer, qmpstatus, uptime, status); NULL for rows that carry none.
    evidence: Mapped[str | None] = mapped_column(Text, nullable=True)


class Pause(Base):
    """Automatic remediation paused by a person, for the whole fleet (`scope` "*") or one cluster.

    Kept in the database so that every replica obeys it; alerts keep arriving and are refused as
    `skipped:paused`, and a person's own reset still goes through the policy."""

    __tablename__ = "webhook_pause"

    scope: Mapped[str] = mapped_column(String(128), primary_key=True)
    since: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(255), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
