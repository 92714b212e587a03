"""`thresholds`: when a guest counts as busy, stale or idle, shared by the exporter and the webhook."""

from __future__ import annotations

from dataclasses import dataclass

from .keys import setting


@dataclass(frozen=True)
class ThresholdsConfig:
    """The limits the exporter publishes for the rules and the webhook re-checks before acting."""

    cpu_percent: float = setting("percent", 80.0, doc="warning above this guest CPU use")
    ram_percent: float = setting("percent", 90.0, doc="warning above this guest memory use")
    disk_percent: float = setting("percent", 90.0, doc="warning above this guest disk use")
    stale_timeout: float = setting(
        "duration", "90s", doc="a heartbeat older than this is stale (three missed 30 s heartbeats)"
    )
    io_window: float = setting(
        "duration", "60s", doc="a guest whose disk writes + network transmit stay at or below "
        "io_idle_bytes_per_second this long is I/O-idle"
    )
    io_idle_bytes_per_second: float = setting(
        "float", 1024.0, minimum=0, doc="disk writes + network transmit a guest may grow by and stay idle"
    )
    mass_loss_fraction: float = setting(
        "ratio", 0.5, doc="share of a cluster's guests stale at once that means monitoring broke"
    )
