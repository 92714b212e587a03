"""`agent`: the program inside each guest that reports to the exporters."""

from __future__ import annotations

from dataclasses import dataclass

from .keys import setting
from .listener_keys import tls_cert_file, tls_client_ca_file, tls_key_file, tls_min_version


@dataclass(frozen=True)
class AgentConfig:
    """Which exporters the agent reports to, as which guest, how often, and whether it serves /metrics."""

    exporter_url: str = setting("url", "http://127.0.0.1:9747", doc="the one exporter (or use exporter_urls)")
    exporter_urls: list[str] = setting(
        "urllist", [], doc="every exporter replica; each report goes to all of them")
    api_key: str | None = setting("str", None, secret=True)
    vmid: int | None = setting("int", None, minimum=1, maximum=999999999)
    uuid: str | None = setting("str", None, doc="SMBIOS UUID to send instead of reading the firmware's (non-root)")
    cluster: str | None = setting("str", None, doc="cluster name, when the exporter serves several")
    interval: float = setting("duration", "30s")
    timeout: float = setting("duration", "10s")
    mode: str = setting("str", "push", choices=("push", "pull", "both"))
    listen: str = setting("listen", "0.0.0.0:9748")
    mounts: list[str] = setting("strlist", [], doc="extra mountpoints to report besides the root volume")
    ca_bundle: str | None = setting("str", None, doc="PEM file of the CA that signed the exporter's certificate")
    verify_ssl: bool = setting("bool", True)
    client_cert_file: str | None = setting("str", None, doc="certificate presented to the exporter (mutual TLS)")
    client_key_file: str | None = setting("str", None, doc="its private key")
    tls_cert_file: str | None = tls_cert_file()
    tls_key_file: str | None = tls_key_file()
    tls_client_ca_file: str | None = tls_client_ca_file()
    tls_min_version: str = tls_min_version()
