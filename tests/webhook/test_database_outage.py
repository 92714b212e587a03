"""The webhook's database fails in the middle of an incident: PostgreSQL stopped and started again,
SQLite locked by another connection, SQLite on a full disk. Each time the webhook answers
Alertmanager 503 (never 500, never a silent 200), the real Alertmanager retries, the guest is reset
exactly once when the database is back, and no earlier history row is lost or changed.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers.private_postgres import private_postgres
from tests.helpers.reliability import Remediation, remediation
from tests.helpers.webhook import auth, firing
from vmhealth.stack.processes import wait_for

pytestmark = [pytest.mark.binaries, pytest.mark.slow]

FIRST, SECOND = 101, 102


def first_incident(parts: Remediation) -> dict:
    """Guest FIRST hangs and is reset once, before any fault: the history the fault must not touch."""
    parts.sim.hang(FIRST)
    parts.fire(FIRST)
    [row] = parts.settled(FIRST)
    assert row["outcome"] == "success" and len(parts.sim.resets(FIRST)) == 1
    return row


def unavailable(parts: Remediation) -> float:
    return parts.webhook_metric("vmhealth_webhook_notifications_total", result="unavailable")


def direct_post(parts: Remediation, vmid: int) -> requests.Response:
    """What Alertmanager gets for a notification right now (sent as Alertmanager would)."""
    body = firing(vmid, fingerprint=f"direct{vmid:010d}", cluster=parts.sim.cluster_name)
    return requests.post(f"{parts.webhook}/alerts", json=body, timeout=60,
                         headers=auth())


def after_recovery(parts: Remediation, before: dict, failures_seen: float) -> None:
    """The retried alert resets SECOND exactly once; FIRST's row and reset count are unchanged."""
    [row] = parts.settled(SECOND)
    assert row["outcome"] == "success", row
    time.sleep(4)  # two more group intervals of Alertmanager: nothing more may happen
    assert len(parts.sim.resets(SECOND)) == 1 and len(parts.sim.resets(FIRST)) == 1
    assert parts.am_failures() >= failures_seen >= 1
    [again] = [r for r in parts.history(FIRST) if r["attempt"] is not None]
    assert again == before
    print(f"observed: webhook answered 503 x{unavailable(parts):g} (one is the test's own POST), "
          f"Alertmanager's failed deliveries "
          f"{parts.am_failures():g}, then 200; resets: {FIRST} x{len(parts.sim.resets(FIRST))}, "
          f"{SECOND} x{len(parts.sim.resets(SECOND))}; {FIRST}'s history row unchanged")


def test_postgres_stopped_mid_incident_503_then_one_reset(tmp_path: Path) -> None:
    with private_postgres() as pg, remediation(tmp_path, pg.url) as parts:
        before = first_incident(parts)
        pg.stop("fast")
        parts.sim.hang(SECOND)
        parts.fire(SECOND)
        wait_for(lambda: unavailable(parts) >= 2 and parts.am_failures() >= 2, 60,
                 "Alertmanager's delivery to be refused twice")
        refused = direct_post(parts, SECOND)
        assert refused.status_code == 503 and "database" in refused.json()["error"], refused.text
        assert parts.sim.resets(SECOND) == []
        assert "replying 503 so Alertmanager retries" in parts.log.read_text()
        failures = parts.am_failures()
        pg.start()
        after_recovery(parts, before, failures)


def test_postgres_stopped_while_the_reset_runs_outcome_settled_after(tmp_path: Path) -> None:
    """The database goes away between the reset POST and the write of its outcome: when it is back,
    the attempt is settled from the node's task list and the guest is not reset again."""
    with private_postgres() as pg, remediation(tmp_path, pg.url, task_seconds=6) as parts:
        parts.sim.hang(FIRST)
        parts.fire(FIRST)
        [task] = wait_for(lambda: parts.sim.resets(FIRST), 60, "the reset POST")
        pg.stop("fast")
        wait_for(lambda: [t for t in parts.sim.resets(FIRST) if t["status"] != "running"], 30, "the task's end")
        wait_for(lambda: "could not" in parts.log.read_text() or "failed" in parts.log.read_text(), 30,
                 "the webhook to fail writing the outcome")
        pg.start()
        [row] = parts.settled(FIRST)
        assert (row["outcome"], row["upid"]) == ("success", task["upid"]), row
        time.sleep(4)
        assert len(parts.sim.resets(FIRST)) == 1
        print(f"observed: outcome written after the restart: {row['outcome']} {row['upid']}; "
              f"resets x{len(parts.sim.resets(FIRST))}")


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another program holding SQLite's write lock (BEGIN EXCLUSIVE) until the block ends."""
    connection = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    connection.execute("BEGIN EXCLUSIVE")
    try:
        yield connection
    finally:
        connection.execute("ROLLBACK")
        connection.close()


def test_sqlite_locked_503_then_one_reset(tmp_path: Path) -> None:
    database = tmp_path / "webhook.db"
    with remediation(tmp_path, f"sqlite:///{database}") as parts:
        before = first_incident(parts)
        with exclusive_lock(database):
            parts.sim.hang(SECOND)
            parts.fire(SECOND)
            started = time.monotonic()
            refused = direct_post(parts, SECOND)
            waited = time.monotonic() - started
            wait_for(lambda: unavailable(parts) >= 2 and parts.am_failures() >= 1, 60,
                     "Alertmanager's delivery to be refused")
            assert refused.status_code == 503 and "database" in refused.json()["error"], refused.text
            assert waited < 9, f"the 503 took {waited:.1f}s; Alertmanager gives up on a delivery after 10s"
            assert parts.sim.resets(SECOND) == []
            started = time.monotonic()
            assert len(parts.history(FIRST)) == 1 and parts.webhook_metric("vmhealth_remediation_queue_depth") == 0
            assert time.monotonic() - started < 3  # the history and /metrics do not wait for the writer's lock
            assert "database is locked" in parts.log.read_text()
            print(f"observed: the locked database's 503 came after {waited:.1f}s")
            failures = parts.am_failures()
        after_recovery(parts, before, failures)


@contextlib.contextmanager
def small_filesystem(size: str = "8m") -> Iterator[Path]:
    """A tmpfs of `size` of its own: filling it gives SQLite a real ENOSPC."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    folder = Path(tempfile.mkdtemp(prefix="vmhealth-small-fs-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        folder.rmdir()
        pytest.fail(f"cannot mount a tmpfs at {folder}: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], capture_output=True, timeout=30)
        folder.rmdir()


def fill(folder: Path) -> Path:
    """Write a file until the filesystem is full; the file is returned (remove it to free the space)."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(chunk)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 512)
    assert os.statvfs(folder).f_bavail == 0
    return filler


def test_sqlite_disk_full_503_then_one_reset(tmp_path: Path) -> None:
    with small_filesystem() as disk, remediation(tmp_path, f"sqlite:///{disk}/webhook.db") as parts:
        before = first_incident(parts)
        filler = fill(disk)
        parts.sim.hang(SECOND)
        parts.fire(SECOND)
        wait_for(lambda: unavailable(parts) >= 2 and parts.am_failures() >= 1, 60,
                 "Alertmanager's delivery to be refused")
        refused = direct_post(parts, SECOND)
        assert refused.status_code == 503 and "database" in refused.json()["error"], refused.text
        assert parts.sim.resets(SECOND) == []
        assert "database or disk is full" in parts.log.read_text()
        assert [r for r in parts.history(FIRST) if r["attempt"] is not None] == [before]
        failures = parts.am_failures()
        filler.unlink()
        after_recovery(parts, before, failures)
