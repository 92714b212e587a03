"""`check-config` (and every program's start) refuses TLS settings that cannot work, naming the key and
the file: a missing or unreadable file, a key that is not the certificate's, an expired certificate,
and TLS keys on a component that cannot use them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tls_support import Pki, make_pki
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
           "webhook": server(pki),
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
        "agent.ca_bundle: agent.exporter_url http://x:9747 is not https://"]
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
