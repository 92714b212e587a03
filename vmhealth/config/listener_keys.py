"""The keys of a section that serves HTTP, the same wherever they appear: TLS (exporter-toolkit's
tls_server_config, one file for everything), and the gunicorn servers' threads and per-address limits."""

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


def threads() -> Any:
    return setting("int", 8, minimum=1, maximum=256, doc="gunicorn threads")


def max_connections_per_address() -> Any:
    return setting("int", 64, minimum=1, maximum=10000,
                   doc="connections one client address may hold open; more get 503 (raise behind NAT)")


def auth_failures_per_minute() -> Any:
    return setting("int", 20, minimum=0, maximum=100000,
                   doc="failed authentications one address may make a minute; past a quarter of them each "
                       "refusal waits (up to 1s), past all 429 (0: no throttle)")
