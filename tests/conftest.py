"""Fixtures shared by every suite: free ports, the real binaries, PostgreSQL.

PostgreSQL tests run against VMHEALTH_TEST_POSTGRES_URL (default: the local server at
127.0.0.1:5432, database `test`) and are skipped when it cannot be reached, unless
VMHEALTH_REQUIRE_POSTGRES=1 (as in .ci/run), where an unreachable server fails them. The same goes
for Debian's prometheus/promtool/alertmanager binaries with VMHEALTH_REQUIRE_BINARIES=1.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.requirements import binary, required
from vmhealth.stack.processes import free_port

POSTGRES_URL = os.environ.get("VMHEALTH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker (gw0, gw1, ...) and the servers it starts draw free ports from a
    range of their own, so that no worker takes a port another one has picked but not yet bound."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw"):
        first = 20000 + 500 * int(worker[2:])
        os.environ.setdefault("FREE_PORT_RANGE", f"{first}-{first + 499}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with slow tests first, each module's tests together and in their order: `make test` hands
    whole modules to its parallel workers in this order (--dist loadfile, no reordering), so that a long
    module does not start last and leave the other workers idle at the end."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)
    _operation_nodeids(items)


def _operation_nodeids(items: list[pytest.Item]) -> None:
    """schemathesis names each API operation's test `test_x[GET /path]`, but on pytest 9.2 all of them
    share the node id `test_x`, and pytest-xdist, which hands out tests by node id, would run only one
    of them: give each the node id its name says."""
    counts = Counter(item.nodeid for item in items)
    for item in items:
        if counts[item.nodeid] > 1 and "[" in item.name and hasattr(item, "_id"):
            item._id = dataclasses.replace(item._id, params=item.name.partition("[")[2].removesuffix("]"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With VMHEALTH_FORBID_SKIPS=1 (as in .ci/run) a skipped test fails the run; under pytest-xdist the
    controller's reporter counts the workers' skips too."""
    if not required("VMHEALTH_FORBID_SKIPS"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and session.exitstatus == 0:
        reporter.write_line(f"VMHEALTH_FORBID_SKIPS: {len(skipped)} test(s) were skipped; every test must run here")
        session.exitstatus = 1


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def promtool() -> str:
    return binary("promtool")


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The URL of a reachable PostgreSQL, or skip/fail as the module docstring says."""
    from sqlalchemy import create_engine, text

    url = POSTGRES_URL
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:
        message = f"PostgreSQL at {url} is not reachable: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
        if required("VMHEALTH_REQUIRE_POSTGRES"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty schema on the PostgreSQL server, dropped after the test."""
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(postgres_server_url)
    with engine.begin() as connection:
        connection.execute(text(f'create schema "{schema}"'))
    separator = "&" if "?" in postgres_server_url else "?"
    yield f"{postgres_server_url}{separator}options=-csearch_path%3D{schema}"
    with engine.begin() as connection:
        connection.execute(text(f'drop schema "{schema}" cascade'))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The webhook's database URL, once on a SQLite file and once on a fresh PostgreSQL schema."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path}/webhook.db"
