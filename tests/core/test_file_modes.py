"""Files the programs create are readable by their owner only, whatever the umask: the SQLite
databases (and SQLite's -wal and -shm files beside them) hold guest names and the history."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import text

from vmhealth.db import make_engine, upgrade


def test_sqlite_files_are_0600_under_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        path = tmp_path / "webhook.db"
        engine = make_engine(f"sqlite:///{path}")
        upgrade(engine, "webhook")
        with engine.connect() as connection:  # keep a connection open: -wal and -shm exist meanwhile
            connection.execute(text("SELECT 1"))
            files = sorted(tmp_path.iterdir())
            assert {f.name for f in files} >= {"webhook.db", "webhook.db-wal", "webhook.db-shm"}
            for file in files:
                assert stat.S_IMODE(file.stat().st_mode) == 0o600, (file.name, oct(file.stat().st_mode))
        engine.dispose()
    finally:
        os.umask(previous)


def test_an_existing_database_keeps_the_mode_its_owner_gave_it(tmp_path: Path) -> None:
    path = tmp_path / "exporter.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    make_engine(f"sqlite:///{path}").dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
