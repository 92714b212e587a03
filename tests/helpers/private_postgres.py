"""A PostgreSQL server of the test's own, which the test may stop and start (the shared one must not be).

    with private_postgres() as pg:
        engine = make_engine(pg.url)
        pg.stop()          # pg_ctl stop -m fast: clients see "connection refused"
        pg.start()         # same data, same port

It runs `initdb` and `pg_ctl` of Debian's PostgreSQL as the `postgres` user (through `runuser` when
the tests run as root, as in CI) in a temporary folder, on a free port on 127.0.0.1 with its unix
socket in that folder, and is stopped and removed when the block ends, also after a failure. When
no PostgreSQL server binaries are installed it skips, or fails with VMHEALTH_REQUIRE_POSTGRES=1.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers.requirements import required
from vmhealth.stack.processes import free_port


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    """One initialised data folder and the server on it; `stop`/`start` as often as a test likes."""

    def __init__(self, bindir: Path, folder: Path, port: int, as_user: list[str]):
        self.bindir = bindir
        self.folder = folder
        self.data = folder / "data"
        self.port = port
        self.as_user = as_user
        self.log = folder / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run([*self.as_user, str(self.bindir / args[0]), *args[1:]], capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} {args[1] if len(args) > 1 else ''} failed ({done.returncode}): "
                               f"{done.stderr.strip()[-2000:]}\n{log}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        done = subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"],
                              capture_output=True, timeout=30)
        return done.returncode == 0


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started private server (database `postgres`, user `postgres`, trust), removed afterwards."""
    bindir = _bindir()
    if bindir is None:
        message = "no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)"
        if required("VMHEALTH_REQUIRE_POSTGRES"):
            pytest.fail(message)
        pytest.skip(message)
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="vmhealth-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    server = PrivatePostgres(bindir, folder, free_port(), as_user)
    try:
        server.init()
        server.start()
        yield server
    finally:
        try:
            if server.data.exists() and server.running():
                server.stop("immediate")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
