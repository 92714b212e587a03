"""Sessions on the webhook's database, one way for SQLite and PostgreSQL.

SQLite write transactions begin IMMEDIATE: SQLite serialises writers anyway, and this keeps a
read-then-write transaction from failing half-way. Reads begin DEFERRED, so that in WAL mode the
history and /metrics stay readable while another connection holds the write lock; and recording a
notification waits only RECORD_BUSY_SECONDS for that lock, so Alertmanager gets its 503 (and
retries) well before its own delivery timeout of at least 10 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

READ = -1.0  # the _BEGIN mode of a read-only session: a plain (deferred) BEGIN
RECORD_BUSY_SECONDS = 5.0  # how long recording a notification waits for SQLite's write lock
WRITE_BUSY_SECONDS = 30.0  # other writes (the worker's, migrations): nobody waits for them
# Conditional updates of rows the session may hold: the database decides by the row count, and the
# loaded objects are not used afterwards, so they are not matched against the criteria in Python.
NO_SYNC = {"synchronize_session": False}
_BEGIN: ContextVar[float] = ContextVar("vmhealth_sqlite_begin", default=WRITE_BUSY_SECONDS)


def _sqlite_immediate(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection):  # type: ignore[no-untyped-def]
        busy = _BEGIN.get()
        if busy == READ:
            connection.exec_driver_sql("BEGIN")
            return
        connection.exec_driver_sql(f"PRAGMA busy_timeout={int(busy * 1000)}")
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Sessions:
    """Sessions on one webhook database for one process (thread-safe: a session per call)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        if engine.dialect.name == "sqlite":
            _sqlite_immediate(engine)
        self.factory = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def tx(self, busy: float = WRITE_BUSY_SECONDS) -> Iterator[Session]:
        """A write transaction; on SQLite it waits up to `busy` seconds for the write lock."""
        token = _BEGIN.set(busy)
        try:
            with self.factory() as session, session.begin():
                yield session
        finally:
            _BEGIN.reset(token)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session; on SQLite (WAL) it does not wait for another connection's write lock."""
        token = _BEGIN.set(READ)
        try:
            with self.factory() as session:
                yield session
        finally:
            _BEGIN.reset(token)
