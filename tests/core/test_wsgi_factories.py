"""Both WSGI factories, and both gunicorn.conf.py files, load the file named by $VMHEALTH_CONFIG, as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmhealth.webhook import create_app


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
    root = Path(__file__).resolve().parents[2]
    gunicorn = Child("gunicorn", [sys.executable, "-m", "gunicorn", "-c", str(root / component / "gunicorn.conf.py"),
                                  f"vmhealth.{component}:create_app()"], tmp_path / "gunicorn.log",
                     f"http://127.0.0.1:{port}/healthz", clean_env(VMHEALTH_CONFIG=str(config_file)), stop_timeout=30,
                     cwd=tmp_path)
    with gunicorn.started(60):
        page = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert 'vmhealth_http_connections_refused_total{reason="per-address-limit"}' in page
