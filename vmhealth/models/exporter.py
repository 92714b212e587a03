"""The exporter's last-seen state: what must survive a restart so silence is neither lost nor invented."""

from __future__ import annotations

from sqlalchemy import Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from vmhealth.db import Base


class GuestState(Base):
    """The last heartbeat of one guest, identified by (cluster, vmid)."""

    __tablename__ = "exporter_guest_state"

    cluster: Mapped[str] = mapped_column(String(128), primary_key=True)
    vmid: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(128), default="")
    hostname: Mapped[str] = mapped_column(String(255), default="")
    last_heartbeat: Mapped[float] = mapped_column(Float)
    # The last report's values (JSON), so /metrics and /api/vms show them again after a restart.
    report: Mapped[str] = mapped_column(Text, default="{}")
