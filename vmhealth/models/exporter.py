"""The exporter's last-seen state: what must survive a restart so silence is neither lost nor invented."""

from __future__ import annotations

from sqlalchemy import Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from vmhealth.db import Base


class LastHeartbeat(Base):
    """The last heartbeat of one guest, identified by (cluster, vmid)."""

    __tablename__ = "exporter_guest_state"

    cluster: Mapped[str] = mapped_column(String(128), primary_key=True)
    vmid: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(128), default="")
    hostname: Mapped[str] = mapped_column(String(255), default="")
    last_heartbeat: Mapped[float] = mapped_column(Float)
    # The last report's values (JSON), so /metrics and /api/vms show them again after a restart.
    report: Mapped[str] = mapped_column(Text, default="{}")


class GuestIdle(Base):
    """A guest that Proxmox showed I/O-idle: since when, and its counters then (poller.IdleRecord).

    Written once per idle spell, so that a restarted exporter keeps judging a hung guest idle."""

    __tablename__ = "exporter_guest_idle"

    cluster: Mapped[str] = mapped_column(String(128), primary_key=True)
    vmid: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(128), default="")
    io_bytes: Mapped[float] = mapped_column(Float)  # diskwrite + netout at `seen_at`
    seen_at: Mapped[float] = mapped_column(Float)
    idle_since: Mapped[float] = mapped_column(Float)  # the last poll that saw it active
