"""Both WSGI factories, and both gunicorn.conf.py files, load the file named by $VMHEALTH_CONFIG, as documented."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import pytest
from gunicorn.app.base import Application

from vmhealth import appcontext
from vmhealth.webhook import create_app

ROOT = Path(__file__).resolve().parents[2]


def test_factory_reads_the_file_named_by_vmhealth_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = tmp_path / "webhook.yml"
    config_file.write_text(
        "clusters:\n"
        "  - {name: lab, host: 127.0.0.1:8006, token_id: a@pve!b, token_secret: s, verify_ssl: false}\n"
        "webhook:\n"
        "  token: alertmanager-token-from-file\n"
        "  admin_token: admin-token-from-file\n"
        f"  database_url: sqlite:///{tmp_path / 'webhook.db'}\n"
    )
    monkeypatch.chdir(tmp_path / "..")  # no ./vmhealth.yml to fall back on
    monkeypatch.setenv("VMHEALTH_CONFIG", str(config_file))
    app = create_app(start_worker=False)
    config = app.extensions["vmhealth"].config
    assert config.webhook.token == "alertmanager-token-from-file"
    assert config.clusters[0].name == "lab"


def _only_vmhealth_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, component: str) -> tuple[str, int]:
    """A file (not ./vmhealth.yml) with a listen address and threads that are not the defaults, named by
    $VMHEALTH_CONFIG alone; the (listen, threads) it sets for `component`."""
    listen, threads = {"exporter": ("127.0.0.1:19747", 3), "webhook": ("127.0.0.1:19749", 5)}[component]
    config_file = tmp_path / "site.yml"
    config_file.write_text(
        "clusters:\n"
        "  - {name: lab, host: 127.0.0.1:9, token_id: a@pve!b, token_secret: s, verify_ssl: false}\n"
        f"{component}:\n"
        f"  listen: {listen}\n"
        f"  threads: {threads}\n"
        f"  database_url: sqlite:///{tmp_path / 'state.db'}\n"
        + ("  api_key: agent-key-from-the-file\n" if component == "exporter" else
           "  token: alertmanager-token-from-file\n  admin_token: admin-token-from-file\n")
    )
    for name in [name for name in os.environ if name.startswith("VMHEALTH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("VMHEALTH_CONFIG", str(config_file))
    monkeypatch.chdir(tmp_path)  # no ./vmhealth.yml here
    return listen, threads


class _GunicornConf(Application):
    """gunicorn reading a -c file as `gunicorn -c FILE APP` does, without serving."""

    def __init__(self, conf: Path):
        self.conf = conf
        super().__init__()

    def load_config(self) -> None:
        self.load_config_from_file(str(self.conf))

    def init(self, parser: Any, opts: Any, args: Any) -> None:
        return None

    def load(self) -> None:
        return None


@pytest.mark.parametrize("component", ["exporter", "webhook"])
def test_the_gunicorn_conf_takes_listen_and_threads_from_vmhealth_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, component: str) -> None:
    listen, threads = _only_vmhealth_config(tmp_path, monkeypatch, component)
    settings = _GunicornConf(ROOT / component / "gunicorn.conf.py").cfg
    assert (settings.bind, settings.threads, settings.workers) == ([listen], threads, 1)


@pytest.mark.parametrize("component", ["exporter", "webhook"])
def test_the_wsgi_factory_takes_listen_and_threads_from_vmhealth_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, component: str) -> None:
    listen, threads = _only_vmhealth_config(tmp_path, monkeypatch, component)
    server = importlib.import_module(f"vmhealth.{component}.server")
    app = importlib.import_module(f"vmhealth.{component}").create_app()
    try:
        section = getattr(appcontext.of(app).config, component)
        assert (section.listen, section.threads) == (listen, threads)
    finally:
        server.stop_app(app)


@pytest.mark.slow
@pytest.mark.parametrize("component", ["exporter", "webhook"])
def test_the_documented_gunicorn_command_serves_with_the_files_settings(tmp_path: Path, component: str) -> None:
    """`VMHEALTH_CONFIG=… gunicorn -c <component>/gunicorn.conf.py 'vmhealth.<component>:create_app()'`:
    the listen address and the limits come from the file, as `vmhealth <component>` uses them."""
    import sys

    import requests

    from vmhealth.stack.launcher import Child, clean_env
    from vmhealth.stack.processes import free_port

    port = free_port()
    config_file = tmp_path / "vmhealth.yml"
    config_file.write_text(
        "clusters:\n"
        "  - {name: lab, host: 127.0.0.1:9, token_id: a@pve!b, token_secret: s, verify_ssl: false}\n"
        "exporter:\n"
        f"  listen: 127.0.0.1:{port if component == 'exporter' else free_port()}\n"
        "  api_key: agent-key-from-the-file\n"
        f"  database_url: sqlite:///{tmp_path / 'exporter.db'}\n"
        "webhook:\n"
        f"  listen: 127.0.0.1:{port if component == 'webhook' else free_port()}\n"
        "  token: alertmanager-token-from-file\n"
        "  admin_token: admin-token-from-file\n"
        f"  database_url: sqlite:///{tmp_path / 'webhook.db'}\n"
    )
    gunicorn = Child("gunicorn", [sys.executable, "-m", "gunicorn", "-c", str(ROOT / component / "gunicorn.conf.py"),
                                  f"vmhealth.{component}:create_app()"], tmp_path / "gunicorn.log",
                     f"http://127.0.0.1:{port}/healthz", clean_env(VMHEALTH_CONFIG=str(config_file)), stop_timeout=30,
                     cwd=tmp_path)
    with gunicorn.started(60):
        page = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert 'vmhealth_http_connections_refused_total{reason="per-address-limit"}' in page
