"""`exporter`: the server that takes heartbeats and reads Proxmox."""

from __future__ import annotations

from dataclasses import dataclass

from .keys import setting
from .listener_keys import (
    auth_failures_per_minute,
    max_connections_per_address,
    threads,
    tls_cert_file,
    tls_client_ca_file,
    tls_key_file,
    tls_min_version,
)


@dataclass(frozen=True)
class ExporterConfig:
    """Where the exporter listens, how it authenticates agents and readers, and its limits."""

    listen: str = setting("listen", "127.0.0.1:9747")
    poll_interval: float = setting("duration", "15s", doc="how often each cluster is read")
    poll_offset: float | None = setting(
        "duration", None, doc="poll on the clock, this far into each poll_interval (stagger a pair: "
        "0s on one replica, half the interval on the other); the first poll waits for its slot")
    api_key: str | None = setting("str", None, secret=True, doc="agents' shared key; per-VM keys derive from it")
    read_token: str | None = setting(
        "str", None, secret=True,
        doc="when set, /metrics and the read API need Authorization: Bearer <read_token> (Prometheus)")
    per_vm_keys: bool = setting(
        "bool", True, doc="only per-VM keys HMAC(api_key, cluster:vmid); false accepts the shared key")
    database_url: str = setting("url", "sqlite:///vmhealth-exporter.db")
    flush_interval: float = setting("duration", "5s", doc="write-behind period of last-seen state")
    max_unknown_guests: int = setting(
        "int", 100, minimum=0, doc="reports accepted for guests Proxmox does not list"
    )
    max_body_bytes: int = setting("int", 65536, minimum=1024, doc="larger reports get 413")
    uuid_lookups_per_poll: int = setting("int", 20, minimum=0, doc="VM config reads to map SMBIOS UUIDs")
    status_checks_per_poll: int = setting(
        "int", 20, minimum=0, doc="status/current reads of silent guests, for qmpstatus"
    )
    monitor_tags: list[str] = setting("strlist", [], doc="when set, only guests with one of these tags")
    ignore_tags: list[str] = setting("strlist", ["vmhealth-ignore"], doc="guests never monitored")
    threads: int = threads()
    max_connections_per_address: int = max_connections_per_address()
    auth_failures_per_minute: int = auth_failures_per_minute()
    tls_cert_file: str | None = tls_cert_file()
    tls_key_file: str | None = tls_key_file()
    tls_client_ca_file: str | None = tls_client_ca_file()
    tls_min_version: str = tls_min_version()
