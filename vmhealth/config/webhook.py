"""`webhook`: the server Alertmanager calls, and `webhook.policy`, the limits on what it may do."""

from __future__ import annotations

from dataclasses import dataclass

from .keys import setting, subsection
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
class PolicyConfig:
    """When the webhook may reset a guest: switches, allow and deny lists, rates and cooldowns."""

    dry_run: bool = setting("bool", False, doc="decide and record everything, touch nothing")
    enabled: bool = setting("bool", True, doc="kill switch: false records alerts but never acts")
    max_attempts: int = setting("int", 3, minimum=1, maximum=100, doc="resets per incident before quarantine")
    cooldown: float = setting("duration", "10m", doc="wait after an attempt before the next (doubles each time)")
    max_cooldown: float = setting("duration", "1h", doc="cap of the doubling cooldown")
    boot_grace: float = setting("duration", "3m", doc="a guest up for less than this is still booting")
    max_actions_per_hour: int = setting("int", 10, minimum=0, doc="global rate limit of Proxmox actions")
    max_concurrent_actions: int = setting("int", 2, minimum=1, maximum=64, doc="actions in flight at once")
    max_hung_fraction: float = setting(
        "ratio", 0.3, doc="circuit breaker: above this share of a cluster hung, act on none"
    )
    opt_in: bool = setting("bool", False, doc="act only on guests in allow_vmids or tagged with allow_tags")
    allow_vmids: list[int] = setting("intlist", [], doc="guests that may be reset (with opt_in)")
    allow_tags: list[str] = setting("strlist", ["vmhealth-reset"], doc="Proxmox tags that allow resets (with opt_in)")
    deny_vmids: list[int] = setting("intlist", [], doc="never reset these guests; wins over allow")
    deny_tags: list[str] = setting("strlist", ["vmhealth-noreset"], doc="never reset guests with these tags")
    escalate: bool = setting("bool", False, doc="after a failed reset, stop + start (not HA-managed guests)")
    task_timeout: float = setting("duration", "2m", doc="how long to follow a reset task's UPID")
    circuit_min_hung: int = setting("int", 2, minimum=1, doc="the circuit breaker needs at least this many hung")
    retry_interval: float = setting("duration", "1m", doc="after a skip for a passing reason, next look no sooner")
    incident_expiry: float = setting(
        "duration", "15m", doc="an incident with no notification this long closes as expired (3x the "
        "webhook route's repeat_interval of 5m: a firing alert is sent again at least that often)"
    )
    pause_alert_after: float = setting(
        "duration", "2h", doc="a runtime pause of automatic remediation longer than this fires "
        "VMHealthRemediationPaused")
    guest_agent_check: str = setting(
        "str", "auto", choices=("auto", "off"),
        doc="auto: before a reset, ping the QEMU guest agent where one is configured; an answer refuses",
    )


@dataclass(frozen=True)
class WebhookConfig:
    """Where the webhook listens, its tokens and database, what it reads before acting, and its policy."""

    listen: str = setting("listen", "127.0.0.1:9749")
    token: str | None = setting("str", None, secret=True, doc="Alertmanager's bearer token")
    admin_token: str | None = setting("str", None, secret=True, doc="manual reset / release")
    viewer_token: str | None = setting("str", None, secret=True, doc="read-only: history and the console")
    metrics_token: str | None = setting(
        "str", None, secret=True,
        doc="when set, /metrics needs it (or the viewer or admin token) as a bearer token (Prometheus)")
    public_history: bool = setting(
        "bool", False, doc="serve the history without a token (warned about at start)")
    database_url: str = setting("url", "sqlite:///vmhealth-webhook.db")
    threads: int = threads()
    max_connections_per_address: int = max_connections_per_address()
    auth_failures_per_minute: int = auth_failures_per_minute()
    claim_lease: float = setting("duration", "5m", doc="a claimed alert not finished by then is taken over")
    history_retention: float = setting(
        "duration", "90d", doc="decisions older than this are deleted (at least 1d)")
    prometheus_url: str | None = setting(
        "url", None, doc="Prometheus to read a guest's heartbeat age from before acting")
    exporter_urls: list[str] = setting(
        "urllist", [], doc="exporters to read a guest's heartbeat age from, without prometheus_url")
    grafana_url: str | None = setting("url", None, doc="the console links each guest to its Grafana dashboard here")
    console_session: float = setting("duration", "12h", doc="a console login lasts this long")
    proxy_hops: int = setting(
        "int", 0, minimum=0, maximum=5,
        doc="reverse proxies in front that set X-Forwarded-For/-Proto/-Host/-Prefix (trusted)")
    policy: PolicyConfig = subsection(PolicyConfig)
    tls_cert_file: str | None = tls_cert_file()
    tls_key_file: str | None = tls_key_file()
    tls_client_ca_file: str | None = tls_client_ca_file()
    tls_min_version: str = tls_min_version()
    ca_bundle: str | None = setting("str", None, doc="CA to verify https exporter_urls with")
    client_cert_file: str | None = setting("str", None, doc="certificate presented to exporter_urls (mutual TLS)")
    client_key_file: str | None = setting("str", None, doc="its private key")
