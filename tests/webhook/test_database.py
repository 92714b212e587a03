"""The webhook's database: migrations from empty and from the older schema, and a database that goes
away (503 so Alertmanager retries) and comes back (the retried notification is acted on once)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import responses
from sqlalchemy import inspect, text

from tests.helpers.webhook import FakePve, auth, firing, make_config
from vmhealth.db import current_revision, make_engine, upgrade
from vmhealth.stack.processes import free_port
from vmhealth.webhook import create_app
from vmhealth.webhook.api import action_json
from vmhealth.webhook.database import WebhookDatabase

HEAD = "wh0005"


def test_migrations_upgrade_an_empty_database(database: str) -> None:
    engine = make_engine(database)
    try:
        assert current_revision(engine, "webhook") is None
        upgrade(engine, "webhook")
        assert current_revision(engine, "webhook") == HEAD
        tables = set(inspect(engine).get_table_names())
        assert {"webhook_event", "webhook_incident", "webhook_action", "webhook_quarantine",
                "alembic_version_webhook"} <= tables
        upgrade(engine, "webhook")  # idempotent
        assert current_revision(engine, "webhook") == HEAD
    finally:
        engine.dispose()


def test_migrations_upgrade_the_older_schema_and_keep_its_history(database: str) -> None:
    engine = make_engine(database)
    try:
        upgrade(engine, "webhook", "wh0001")
        assert "webhook_quarantine" not in inspect(engine).get_table_names()
        with engine.begin() as connection:
            connection.execute(text(
                "insert into webhook_action (at, cluster, node, vmid, name, fingerprint, action, outcome, actor,"
                " reason) values (1700000000, 'lab', 'pve1', 100, 'web01', 'fp', 'reset', 'success',"
                " 'alertmanager', 'old')"))
        upgrade(engine, "webhook")
        assert current_revision(engine, "webhook") == HEAD
        columns = {c["name"] for c in inspect(engine).get_columns("webhook_action")}
        assert {"forced", "received_at", "acted_at", "finished_at"} <= columns
        with engine.connect() as connection:
            row = connection.execute(text("select vmid, outcome, forced from webhook_action")).one()
        assert (row.vmid, row.outcome, bool(row.forced)) == (100, "success", False)
    finally:
        engine.dispose()


def test_migration_0003_adds_evidence_and_keeps_the_rows_of_0002(database: str) -> None:
    engine = make_engine(database)
    try:
        upgrade(engine, "webhook", "wh0002")
        with engine.begin() as connection:
            connection.execute(text(
                "insert into webhook_event (fingerprint, starts_at, status, alertname, cluster, vmid, node, name,"
                " action, labels, actor, reason, force, received_at, deliveries, state, result) values ('fp',"
                " '2026-01-01T00:05:00Z', 'firing', 'VMHung', 'lab', 100, 'pve1', 'web01', 'reset', '{}',"
                " 'alertmanager', '', false, 1700000000, 2, 'done', 'success: OK')"))
            connection.execute(text(
                "insert into webhook_action (at, cluster, node, vmid, name, fingerprint, event_id, action, outcome,"
                " actor, reason, forced, received_at) values (1700000001, 'lab', 'pve1', 100, 'web01', 'fp', 1,"
                " 'reset', 'success', 'alertmanager', 'old', true, 1700000000)"))
        upgrade(engine, "webhook")
        assert current_revision(engine, "webhook") == HEAD
        for table in ("webhook_event", "webhook_action"):
            column = {c["name"]: c for c in inspect(engine).get_columns(table)}["evidence"]
            assert column["nullable"] is True
        with engine.connect() as connection:
            event = connection.execute(text("select vmid, deliveries, result, evidence from webhook_event")).one()
            action = connection.execute(text(
                "select vmid, outcome, forced, received_at, evidence from webhook_action")).one()
        assert (event.vmid, event.deliveries, event.result, event.evidence) == (100, 2, "success: OK", None)
        assert (action.vmid, action.outcome, bool(action.forced), action.received_at, action.evidence) == (
            100, "success", True, 1700000000, None)
        [row] = WebhookDatabase(engine).history.rows()  # the webhook reads the old row: no evidence is an empty object
        assert action_json(row)["evidence"] == {} and action_json(row)["reason"] == "old"
    finally:
        engine.dispose()


def test_migration_0004_lets_incidents_of_0003_expire_from_their_opening(database: str) -> None:
    """Incidents opened before wh0004 have no last notification: they count from opened_at."""
    engine = make_engine(database)
    try:
        upgrade(engine, "webhook", "wh0003")
        with engine.begin() as connection:
            connection.execute(text(
                "insert into webhook_incident (cluster, vmid, open_key, fingerprint, starts_at, alertname, state,"
                " attempts, opened_at) values ('lab', 900001, 'lab/900001', 'fp', '2026-01-01T00:05:00Z', 'VMHung',"
                " 'open', 0, 1700000000)"))
        upgrade(engine, "webhook")
        assert current_revision(engine, "webhook") == HEAD
        column = {c["name"]: c for c in inspect(engine).get_columns("webhook_incident")}["last_notified_at"]
        assert column["nullable"] is True
        store = WebhookDatabase(engine)
        assert store.incidents.expire(1700000000 + 900, 900) == []
        [row] = store.incidents.expire(1700000000 + 1000, 900)
        assert (row.vmid, row.outcome) == (900001, "closed:expired") and "for 1000s" in row.reason
        assert store.incidents.open_incident_attempts() == []
    finally:
        engine.dispose()


class TcpProxy:
    """A TCP relay to PostgreSQL that the test can cut and restore, as a database outage."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.port = free_port()
        self.listener: socket.socket | None = None
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self.lock:
            if self.listener is not None:
                with contextlib.suppress(OSError):  # shutdown wakes the accept() blocked in the thread
                    self.listener.shutdown(socket.SHUT_RDWR)
                self.listener.close()
                self.listener = None
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxied(postgres_url: str) -> Iterator[tuple[str, TcpProxy]]:
    parts = urlsplit(postgres_url)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    proxy.start()
    netloc = parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    try:
        yield urlunsplit(parts._replace(netloc=netloc)), proxy
    finally:
        proxy.stop()


def test_database_down_replies_503_and_the_retry_succeeds(proxied: tuple[str, TcpProxy]) -> None:
    url, proxy = proxied
    mock = responses.RequestsMock(assert_all_requests_are_fired=False)
    mock.start()
    pve = FakePve(mock)
    for vmid in range(900, 910):
        pve.add(vmid, status="stopped", uptime=0)
    pve.add(100)
    app = create_app(make_config(url), task_poll_interval=0.01, settle=0.05, worker_poll=0.05)
    ctx = app.extensions["vmhealth"]
    try:
        client = app.test_client()
        assert client.get("/metrics").status_code == 200
        proxy.stop()
        response = client.post("/alerts", json=firing(100), headers=auth())
        assert response.status_code == 503 and "database" in response.get_json()["error"]
        assert client.get("/metrics").status_code == 200  # the database-backed gauges are left out
        assert pve.posts == []
        proxy.start()
        assert client.post("/alerts", json=firing(100), headers=auth()).status_code == 200
        assert ctx.worker.drain(30)
        assert pve.resets(100) == 1
        registry = ctx.metrics.registry
        assert registry.get_sample_value("vmhealth_webhook_notifications_total",
                                         {"status": "firing", "result": "unavailable"}) == 1
        assert registry.get_sample_value("vmhealth_webhook_notifications_total",
                                         {"status": "firing", "result": "recorded"}) == 1
    finally:
        ctx.close()
        mock.stop()
        mock.reset()


def test_db_upgrade_command_creates_the_webhook_schema(tmp_path: Any) -> None:
    import subprocess
    import sys

    import yaml

    url = f"sqlite:///{tmp_path}/webhook.db"
    config = tmp_path / "vmhealth.yml"
    config.write_text(yaml.safe_dump({"webhook": {"database_url": url}}))
    done = subprocess.run([sys.executable, "-m", "vmhealth", "db", "upgrade", "--component", "webhook",
                           "--config", str(config)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "webhook:" in done.stdout and HEAD in done.stdout
    engine = make_engine(url)
    try:
        assert current_revision(engine, "webhook") == HEAD
    finally:
        engine.dispose()
