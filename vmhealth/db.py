"""Database engines and schema migrations shared by the exporter and the webhook.

Each component keeps its own database (its own URL) and its own Alembic history, under
`vmhealth/migrations/<component>/versions`, recorded in the table `alembic_version_<component>`,
so one PostgreSQL database can also hold both.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import DeclarativeBase

from vmhealth.config import DATABASE_COMPONENTS

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")
COMPONENTS = DATABASE_COMPONENTS


class Base(DeclarativeBase):
    """Declarative base of every vmhealth table."""


def _create_private(path: str | None) -> None:
    """Create a SQLite file readable by its owner only (0600, whatever the umask): it holds every
    guest's name and the remediation history. SQLite gives its -wal and -shm files the same mode."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # an existing file keeps its mode
    except OSError:
        return  # a missing folder and the like: SQLite's own error says it better


def make_engine(url: str, **kwargs: object) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and cross-thread use."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        _create_private(make_url(url).database)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _alembic_config(engine: Engine, component: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(MIGRATIONS / component / "versions"))
    config.attributes["engine"] = engine
    config.attributes["version_table"] = f"alembic_version_{component}"
    return config


def upgrade(engine: Engine, component: str, revision: str = "head") -> None:
    """Bring `component`'s tables in `engine` up to `revision` (idempotent)."""
    from alembic import command

    command.upgrade(_alembic_config(engine, component), revision)


def current_revision(engine: Engine, component: str) -> str | None:
    """The revision `component`'s tables are at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": f"alembic_version_{component}"}
        )
        return context.get_current_revision()
