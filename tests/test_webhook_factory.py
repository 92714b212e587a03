"""The webhook's WSGI factory loads the file named by $VMHEALTH_CONFIG, as gunicorn.conf.py documents."""

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
    config = app.config["VMHEALTH"]
    assert config.webhook.token == "alertmanager-token-from-file"
    assert config.clusters[0].name == "lab"
