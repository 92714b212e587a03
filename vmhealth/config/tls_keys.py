"""A listener's TLS keys, the same in every section that serves (exporter-toolkit's
tls_server_config, one file for everything)."""

from __future__ import annotations

from typing import Any

from .keys import setting


def tls_cert_file() -> Any:
    return setting("str", None, doc="serve HTTPS with this PEM certificate (chain); re-read on change")


def tls_key_file() -> Any:
    return setting("str", None, doc="its private key")


def tls_client_ca_file() -> Any:
    return setting("str", None, doc="require client certificates signed by this CA (mutual TLS)")


def tls_min_version() -> Any:
    return setting("str", "1.2", choices=("1.2", "1.3"))
