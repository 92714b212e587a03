"""Last-seen state in SQL: loaded at start, written behind in batches.

An exporter restart must neither forget a guest that was already silent (its old heartbeat time
comes back) nor invent silence for one that is fine (at most `flush_interval` of heartbeat time is
lost, far below any sane stale timeout). Writes are one upsert batch per flush; a failed write keeps
the changes for the next flush, and the final flush runs at shutdown. The guests' idle spells
(`poller.IoActivity`) are written by the pollers, once per spell, for the same reason.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading

from sqlalchemy import Engine, delete, select, tuple_
from sqlalchemy.orm import Session

from vmhealth.db import make_engine, upgrade
from vmhealth.models.exporter import GuestIdle, LastHeartbeat

from .poller import IdleRecord
from .state import Disk, GuestKey, GuestState, Heartbeat

log = logging.getLogger(__name__)
_REPORT_FIELDS = [f.name for f in dataclasses.fields(Heartbeat) if f.name not in ("received", "hostname", "node")]


def _encode(hb: Heartbeat) -> str:
    values = {name: getattr(hb, name) for name in _REPORT_FIELDS}
    values["disks"] = [dataclasses.astuple(d) for d in hb.disks]
    return json.dumps(values, separators=(",", ":"))


def _decode(row: LastHeartbeat) -> Heartbeat:
    try:
        values = json.loads(row.report or "{}")
    except ValueError:
        values = {}
    values = {k: v for k, v in values.items() if k in _REPORT_FIELDS}
    values["disks"] = tuple(Disk(*d) for d in values.get("disks", ()))
    return Heartbeat(received=row.last_heartbeat, hostname=row.hostname, node=row.node, **values)


class GuestStateArchive:
    """The database side of the exporter's state."""

    def __init__(self, url: str):
        self.engine: Engine = make_engine(url)
        upgrade(self.engine, "exporter")

    def load(self) -> dict[GuestKey, Heartbeat]:
        with Session(self.engine) as session:
            return {(row.cluster, row.vmid): _decode(row) for row in session.scalars(select(LastHeartbeat))}

    def write(self, changed: dict[GuestKey, Heartbeat], removed: set[GuestKey]) -> None:
        if not changed and not removed:
            return
        rows = [
            {"cluster": c, "vmid": v, "node": hb.node, "hostname": hb.hostname,
             "last_heartbeat": hb.received, "report": _encode(hb)}
            for (c, v), hb in changed.items()
        ]
        with self.engine.begin() as connection:
            if rows:
                if self.engine.dialect.name == "postgresql":
                    from sqlalchemy.dialects.postgresql import insert
                else:
                    from sqlalchemy.dialects.sqlite import insert
                statement = insert(LastHeartbeat)
                statement = statement.on_conflict_do_update(
                    index_elements=["cluster", "vmid"],
                    set_={name: statement.excluded[name] for name in ("node", "hostname", "last_heartbeat", "report")},
                )
                connection.execute(statement, rows)
            if removed:
                connection.execute(delete(LastHeartbeat).where(
                    tuple_(LastHeartbeat.cluster, LastHeartbeat.vmid).in_(list(removed))))

    def load_idle(self) -> dict[str, dict[int, IdleRecord]]:
        """cluster -> vmid -> the guest's last stored idle spell."""
        out: dict[str, dict[int, IdleRecord]] = {}
        with Session(self.engine) as session:
            for row in session.scalars(select(GuestIdle)):
                out.setdefault(row.cluster, {})[row.vmid] = IdleRecord(row.seen_at, row.io_bytes, row.node,
                                                                        row.idle_since)
        return out

    def write_idle(self, cluster: str, records: dict[int, IdleRecord]) -> None:
        """Upsert the idle spells of one cluster's guests (a row per guest, replaced by its next spell)."""
        rows = [{"cluster": cluster, "vmid": vmid, "node": r.node, "io_bytes": float(r.total), "seen_at": r.at,
                 "idle_since": r.last_active} for vmid, r in records.items()]
        if not rows:
            return
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        statement = insert(GuestIdle)
        statement = statement.on_conflict_do_update(
            index_elements=["cluster", "vmid"],
            set_={name: statement.excluded[name] for name in ("node", "io_bytes", "seen_at", "idle_since")})
        with self.engine.begin() as connection:
            connection.execute(statement, rows)

    def close(self) -> None:
        self.engine.dispose()


class WriteBehind:
    """Flushes the guest state's changes every `interval` seconds on a daemon thread."""

    def __init__(self, guests: GuestState, archive: GuestStateArchive, interval: float):
        self.guests, self.archive, self.interval = guests, archive, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vmhealth-write-behind", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def flush(self) -> bool:
        changed, removed = self.guests.take_changes()
        try:
            self.archive.write(changed, removed)
        except Exception as exc:
            self.guests.restore_changes(changed, removed)
            if not self._failing:
                log.error("cannot write last-seen state (%d guests kept for the next try): %s", len(changed), exc)
            self._failing = True
            return False
        if self._failing:
            log.info("last-seen state written again")
        self._failing = False
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)
        self.flush()
