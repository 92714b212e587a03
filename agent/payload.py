"""The heartbeat report a sample becomes: the original camelCase payload plus the extended fields.

The original fields (RAM and disk in MB, CPU in percent) keep older exporters and scripts working;
the byte-exact extended fields are what the exporter prefers when present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vmhealth import __version__

from .collect import Sample

MB = 1024 * 1024


@dataclass(frozen=True)
class Identity:
    """What names this guest to the exporter; fixed for the agent's lifetime."""

    vmid: int | None = None
    uuid: str | None = None
    cluster: str | None = None


def build(sample: Sample, identity: Identity) -> dict[str, Any]:
    """The JSON-ready report for `sample`; parts the sample lacks are left out, never sent as 0."""
    report: dict[str, Any] = {"hostname": sample.hostname, "status": "running", "timestamp": int(sample.timestamp),
                              "agentVersion": __version__}
    if identity.vmid is not None:
        report["vmid"] = str(identity.vmid)
    if identity.uuid:
        report["uuid"] = identity.uuid
    if identity.cluster:
        report["cluster"] = identity.cluster
    if sample.cpu_usage_ratio is not None:
        report["cpuUsage"] = round(sample.cpu_usage_ratio * 100, 1)
    if sample.memory_total_bytes is not None and sample.memory_used_bytes is not None:
        report["ramUsage"] = sample.memory_used_bytes // MB
        report["ramTotal"] = sample.memory_total_bytes // MB
        report["memUsedBytes"] = sample.memory_used_bytes
        report["memTotalBytes"] = sample.memory_total_bytes
    if sample.root is not None:
        report["diskUsage"] = sample.root.used_bytes // MB
        report["diskTotal"] = sample.root.total_bytes // MB
        report["diskUsedBytes"] = sample.root.used_bytes
        report["diskTotalBytes"] = sample.root.total_bytes
    if sample.disks:
        report["disks"] = [{"mountpoint": d.mountpoint, "usedBytes": d.used_bytes, "totalBytes": d.total_bytes}
                           for d in sample.disks]
    if sample.uptime_seconds is not None:
        report["uptime"] = int(sample.uptime_seconds)
    if sample.net_rx_total is not None:
        report["netRxBytes"] = sample.net_rx_total
        report["netTxBytes"] = sample.net_tx_total
    if sample.load is not None:
        report["load1"], report["load5"], report["load15"] = (round(v, 2) for v in sample.load)
    return report
