"""`check-config` (and every program's start) refuses TLS settings that cannot work, naming the key and
the file: a missing or unreadable file, a key that is not the certificate's, an expired certificate,
and TLS keys on a component that cannot use them."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.tls import Pki, make_pki
from vmhealth.config import ConfigError, load

KEY = "agent-shared-key-7f3e9c1d"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def problems(raw: dict[str, Any]) -> list[str]:
    try:
        load(raw=raw, environ={})
    except ConfigError as exc:
        return exc.problems
    return []


def server(pki: Pki, **overrides: Any) -> dict[str, Any]:
    return {"tls_cert_file": str(pki.server.cert), "tls_key_file": str(pki.server.key), **overrides}


def test_a_good_server_and_client_setup_is_accepted(pki: Pki) -> None:
    raw = {"exporter": server(pki, tls_client_ca_file=str(pki.ca), tls_min_version="1.3"),
           "webhook": server(pki, ca_bundle=str(pki.ca), client_cert_file=str(pki.client.cert),
                             client_key_file=str(pki.client.key)),
           "agent": {"mode": "both", "exporter_url": "https://127.0.0.1:9747", "ca_bundle": str(pki.ca),
                     "client_cert_file": str(pki.client.cert), "client_key_file": str(pki.client.key),
                     **server(pki)}}
    assert problems(raw) == []


def test_missing_and_unreadable_files_are_named(pki: Pki, tmp_path: Path) -> None:
    unreadable = tmp_path / "a-directory.key"  # unreadable even for root, unlike a file of mode 0
    unreadable.mkdir()
    found = problems({"exporter": server(pki, tls_cert_file=str(tmp_path / "nope.crt")),
                      "webhook": server(pki, tls_key_file=str(unreadable))})
    assert found == [f"exporter.tls_cert_file: cannot read {tmp_path / 'nope.crt'}: No such file or directory",
                     f"webhook.tls_key_file: cannot read {unreadable}: Is a directory"]


def test_a_key_that_is_not_the_certificates_is_refused(pki: Pki) -> None:
    found = problems({"exporter": server(pki, tls_key_file=str(pki.client.key))})
    assert found == [f"exporter.tls_key_file: {pki.client.key} does not match the certificate {pki.server.cert}"]


def test_the_webhooks_client_certificate_is_checked_too(pki: Pki) -> None:
    assert problems({"webhook": {"client_cert_file": str(pki.client.cert), "client_key_file": str(pki.server.key)}}) \
        == [f"webhook.client_key_file: {pki.server.key} does not match the certificate {pki.client.cert}"]
    assert problems({"webhook": {"client_cert_file": str(pki.client.cert)}}) == [
        "webhook.client_key_file: missing (client_cert_file is set)"]


def test_an_expired_certificate_is_refused_with_its_date(pki: Pki) -> None:
    found = problems({"webhook": server(pki, tls_cert_file=str(pki.expired.cert), tls_key_file=str(pki.expired.key))})
    assert len(found) == 1 and found[0].startswith(f"webhook.tls_cert_file: {pki.expired.cert} expired on "), found
    client = problems({"agent": {"exporter_url": "https://x:1", "client_cert_file": str(pki.expired.cert),
                                 "client_key_file": str(pki.expired.key)}})
    assert len(client) == 1 and client[0].startswith("agent.client_cert_file: "), client


def test_tls_keys_where_they_cannot_be_used_are_refused(pki: Pki) -> None:
    assert problems({"agent": {"mode": "push", **server(pki)}}) == [
        f"agent.{key}: the agent serves nothing with mode: push; set mode: pull or both, or use client_cert_file "
        "for a client certificate" for key in ("tls_cert_file", "tls_key_file")]
    assert problems({"agent": {"exporter_url": "http://x:9747", "ca_bundle": str(pki.ca)}}) == [
        "agent.ca_bundle: no exporter of agent.exporter_urls is https:// (http://x:9747)"]
    assert problems({"exporter": {"tls_client_ca_file": str(pki.ca)}}) == [
        "exporter.tls_cert_file: missing (tls_client_ca_file is set)"]
    assert problems({"webhook": {"tls_cert_file": str(pki.server.cert)}}) == [
        "webhook.tls_key_file: missing (tls_cert_file is set)"]
    assert problems({"exporter": server(pki, tls_min_version="1.1")})[0].startswith("exporter.tls_min_version")
    assert problems({"clusters": [{"name": "a", "tls_cert_file": "x"}]})[0].startswith(
        "clusters[0].tls_cert_file: unknown key")


def test_check_config_prints_the_path(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "vmhealth.yml"
    path.write_text(yaml.safe_dump({"exporter": {"api_key": KEY, **server(pki, tls_key_file=str(pki.client.key))}}))
    checked = subprocess.run([sys.executable, "-m", "vmhealth", "check-config", str(path)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 2
    assert f"exporter.tls_key_file: {pki.client.key} does not match the certificate {pki.server.cert}" in checked.stderr


def test_the_tls_keys_come_from_the_environment_too(pki: Pki) -> None:
    environ = {"VMHEALTH_WEBHOOK_TLS_CERT_FILE": str(pki.server.cert),
               "VMHEALTH_WEBHOOK_TLS_KEY_FILE": str(pki.server.key), "VMHEALTH_WEBHOOK_TLS_CLIENT_CA_FILE": str(pki.ca)}
    config = load(raw={}, environ=environ)
    assert (config.webhook.tls_cert_file, config.webhook.tls_client_ca_file) == (str(pki.server.cert), str(pki.ca))


def switched_on(text: str, folder: Path) -> str:
    """A shipped configuration with its commented TLS lines switched on, pointing at `folder`'s files."""
    lines = []
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("# scheme: https", "# tls_config:", "#   ca_file:", "#   cert_file:", "#   key_file:")):
            line = line.replace("# ", "", 1)
        lines.append(line.replace("- url: http://", "- url: https://"))
    out = "\n".join(lines)
    for directory in ("/etc/prometheus/vmhealth", "/etc/alertmanager/vmhealth"):
        out = out.replace(directory, str(folder))
    return out


@pytest.mark.binaries
@pytest.mark.parametrize("name", ["prometheus/prometheus.yml", "compose:prometheus",
                                  "alertmanager/alertmanager.yml", "compose:alertmanager"])
def test_the_shipped_tls_lines_switch_on_and_pass_the_checkers(name: str, pki: Pki, tmp_path: Path) -> None:
    """The repository's files, and the same files as the compose stack starts them (deploy/compose/*.sed)."""
    from tests.helpers.compose_file import started_config
    from tests.helpers.requirements import binary

    root = Path(__file__).resolve().parents[2]
    for target, source in (("ca.pem", pki.ca), ("prometheus.crt", pki.client.cert), ("prometheus.key", pki.client.key),
                           ("alertmanager.crt", pki.client.cert), ("alertmanager.key", pki.client.key)):
        (tmp_path / target).write_bytes(source.read_bytes())
    if name.startswith("compose:"):
        service = name.partition(":")[2]
        name = f"{service}.yml"
        shipped = started_config(service)[1].replace("credentials_file: /etc/prometheus/", "credentials_file: secrets/")
    else:
        shipped = (root / name).read_text()
    text = switched_on(shipped, tmp_path)
    config = yaml.safe_load(text)
    if name.endswith("prometheus.yml"):
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        assert all(jobs[job]["scheme"] == "https" and jobs[job]["tls_config"]["cert_file"]
                   for job in ("vmhealth-exporter", "vmhealth-webhook", "vmhealth-agent"))
        (tmp_path / "rules").symlink_to(root / "prometheus/rules")
        (tmp_path / "sd").mkdir()
        for job in jobs.values():  # the compose variant's read tokens, which promtool reads too
            if "authorization" in job:
                secret = tmp_path / job["authorization"]["credentials_file"]
                secret.parent.mkdir(exist_ok=True)
                secret.write_text("a-read-token-from-the-env-file")
        command = [binary("promtool"), "check", "config"]
    else:
        webhook = next(r for r in config["receivers"] if r["name"] == "vmhealth-webhook")["webhook_configs"][0]
        assert webhook["url"].startswith("https://") and webhook["http_config"]["tls_config"]["ca_file"]
        command = [binary("amtool"), "check-config"]
    path = tmp_path / Path(name).name
    path.write_text(text)
    checked = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_private_key_others_can_read_is_warned_about(pki: Pki, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    key = tmp_path / "server.key"
    key.write_bytes(pki.server.key.read_bytes())
    key.chmod(0o640)
    with caplog.at_level(logging.WARNING, logger="vmhealth.config"):
        assert problems({"exporter": server(pki, tls_key_file=str(key))}) == []
    assert f"exporter.tls_key_file: {key} can be read by its group (mode 640); chmod 600 it" in caplog.text


def test_the_windows_install_writes_only_agent_keys() -> None:
    """install-windows.ps1 writes agent.yml from its parameters: each key it sets must be one the agent reads."""
    from vmhealth.config import SCHEMA

    script = (Path(__file__).resolve().parents[2] / "agent/install-windows.ps1").read_text()
    written = set(re.findall(r"\$Agent\.(\w+) = ", script))
    assert {"ca_bundle", "client_cert_file", "client_key_file"} <= written
    assert written <= set(SCHEMA.keys["agent"].keys), written - set(SCHEMA.keys["agent"].keys)


@pytest.mark.parametrize(("listen", "tls", "warned"), [
    ("0.0.0.0:9747", False, True), ("[::]:9747", False, True), ("192.0.2.4:9747", False, True),
    ("0.0.0.0:9747", True, False), ("127.0.0.1:9747", False, False), ("[::1]:9747", False, False),
])
def test_plain_http_beyond_loopback_is_warned_about(listen: str, tls: bool, warned: bool) -> None:
    from dataclasses import replace

    from vmhealth.tls import plain_http_warning

    section = replace(load(raw={}, environ={}).exporter, listen=listen, tls_cert_file="x.crt" if tls else None)
    warning = plain_http_warning("exporter", section)
    assert (warning is not None) == warned
    if warned:
        assert warning == (f"exporter listens on {listen} over plain HTTP: the keys and tokens sent to it cross the "
                           "network in the clear; set exporter.tls_cert_file and tls_key_file (docs/security.md, "
                           "Channels)")
