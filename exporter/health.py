"""A guest's health as the read API reports it, by the same thresholds and rules as the alerts.

healthy / warning / down follow the original monitor: down when the last heartbeat is older than
the stale timeout (or there never was one), warning when CPU, memory or disk use is above its
threshold. `hung` mirrors the `VMHung` rule: down, while Proxmox says the guest runs, unlocked and
not paused, on an online node of a reachable cluster, and monitored, and Proxmox has seen it I/O-idle
for `thresholds.io_window` (no counters: no evidence, not hung). The rules' mass-loss hold
(`cluster:vmhealth_heartbeats_lost:bool`) needs each guest's own heartbeat interval, which only
Prometheus has, so it is not applied here.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmhealth.config import ThresholdsConfig

from .state import ClusterState, Heartbeat, PveGuest


@dataclass(frozen=True)
class Health:
    state: str  # healthy | warning | down
    is_down: bool
    is_warning: bool
    hung: bool


def _over(used: float | None, total: float | None, percent: float) -> bool:
    return used is not None and bool(total) and used / total > percent / 100


def classify(
    heartbeat: Heartbeat | None,
    guest: PveGuest | None,
    cluster: ClusterState,
    monitored: bool,
    thresholds: ThresholdsConfig,
    now: float,
) -> Health:
    is_down = heartbeat is None or now - heartbeat.received > thresholds.stale_timeout
    is_warning = heartbeat is not None and not is_down and (
        (heartbeat.cpu_ratio is not None and heartbeat.cpu_ratio > thresholds.cpu_percent / 100)
        or _over(heartbeat.mem_used, heartbeat.mem_total, thresholds.ram_percent)
        or _over(heartbeat.disk_used, heartbeat.disk_total, thresholds.disk_percent)
    )
    snapshot = cluster.snapshot
    hung = (
        heartbeat is not None and is_down and guest is not None and guest.running and not guest.lock
        and monitored and cluster.up and snapshot is not None and snapshot.nodes.get(guest.node, False)
        and guest.vmid not in cluster.paused
        and guest.io_last_active is not None and now - guest.io_last_active >= thresholds.io_window
    )
    state = "down" if is_down else "warning" if is_warning else "healthy"
    return Health(state=state, is_down=is_down, is_warning=is_warning, hung=bool(hung))
