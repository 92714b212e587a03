"""A sample as Prometheus text exposition (format 0.0.4), written by hand to keep the agent small.

Names follow node_exporter's conventions under the `vmhealth_agent_` prefix: base units in the name,
`_total` only on counters, a `mountpoint` label on filesystems, a `device` label on network counters,
and `vmhealth_agent_info` carrying identity as labels with the value 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from vmhealth import __version__
from vmhealth.textformat import escape
from vmhealth.textformat import format_value as _number

from .collect import Sample
from .payload import Identity

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
COLLECTORS = ("cpu", "memory", "swap", "filesystem", "network", "load", "boot_time")


class _Page:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[dict[str, str], float | int]]) -> None:
        rows = list(samples)
        if not rows:
            return
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            if labels:
                inner = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
                self.lines.append(f"{name}{{{inner}}} {_number(value)}")
            else:
                self.lines.append(f"{name} {_number(value)}")

    def one(self, name: str, kind: str, help_text: str, value: float | int | None) -> None:
        if value is not None:
            self.family(name, kind, help_text, [({}, value)])


def render(sample: Sample, identity: Identity, pushers: Sequence[Any] = ()) -> str:
    """The /metrics page for `sample`; `pushers` (one Pusher per exporter) add the push series in mode
    `both`: the newest report any exporter accepted, the failures of all, and each exporter's state."""
    page = _Page()
    p = "vmhealth_agent_"
    info = {"hostname": sample.hostname, "version": __version__,
            "vmid": "" if identity.vmid is None else str(identity.vmid), "uuid": identity.uuid or "",
            "cluster": identity.cluster or ""}
    page.family(f"{p}info", "gauge", "Agent identity and version; always 1.", [(info, 1)])
    page.one(f"{p}cpu_usage_ratio", "gauge", "Share of CPU time not idle since the previous reading (0-1).",
             sample.cpu_usage_ratio)
    page.family(f"{p}cpu_seconds_total", "counter", "CPU time spent in each mode, summed over all CPUs.",
                [({"mode": mode}, seconds) for mode, seconds in sorted(sample.cpu_seconds.items())])
    page.one(f"{p}cpus", "gauge", "Number of logical CPUs.", sample.cpu_count)
    page.one(f"{p}memory_used_bytes", "gauge", "Memory in use: total minus available.", sample.memory_used_bytes)
    page.one(f"{p}memory_total_bytes", "gauge", "Memory the guest sees.", sample.memory_total_bytes)
    page.one(f"{p}swap_used_bytes", "gauge", "Swap in use.", sample.swap_used_bytes)
    page.one(f"{p}swap_total_bytes", "gauge", "Swap configured (0 when none).", sample.swap_total_bytes)
    disks = ([sample.root] if sample.root else []) + sample.disks
    page.family(f"{p}filesystem_used_bytes", "gauge", "Filesystem space in use.",
                [({"mountpoint": d.mountpoint}, d.used_bytes) for d in disks])
    page.family(f"{p}filesystem_size_bytes", "gauge", "Filesystem size.",
                [({"mountpoint": d.mountpoint}, d.total_bytes) for d in disks])
    page.family(f"{p}network_receive_bytes_total", "counter", "Bytes received, per network device.",
                [({"device": dev}, n) for dev, n in sorted(sample.net_rx_bytes.items())])
    page.family(f"{p}network_transmit_bytes_total", "counter", "Bytes sent, per network device.",
                [({"device": dev}, n) for dev, n in sorted(sample.net_tx_bytes.items())])
    page.one(f"{p}boot_time_seconds", "gauge", "Unix time the guest booted.", sample.boot_time_seconds)
    page.one(f"{p}uptime_seconds", "gauge", "Seconds since the guest booted.", sample.uptime_seconds)
    if sample.load is not None:
        for name, value in zip(("load1", "load5", "load15"), sample.load, strict=True):
            page.one(f"{p}{name}", "gauge", f"{name[4:]}-minute load average.", value)
    failed = set(sample.failed)
    page.family(f"{p}collector_success", "gauge", "Whether each part was read in this collection (1) or not (0).",
                [({"collector": c}, 0 if any(f == c or f.startswith(c + " ") for f in failed) else 1)
                 for c in COLLECTORS if c != "load" or sample.load is not None or "load" in failed])
    if pushers:
        page.one(f"{p}last_push_timestamp_seconds", "gauge", "Unix time of the last report an exporter accepted.",
                 max(push.last_success or 0 for push in pushers))
        page.one(f"{p}push_failures_total", "counter", "Reports an exporter did not accept (any reason).",
                 sum(push.failures_total for push in pushers))
        page.family(f"{p}push_up", "gauge", "Whether the exporter accepted the last report sent to it (1) or not.",
                    [({"exporter": push.exporter}, 1 if push.state == "ok" else 0) for push in pushers])
    return "\n".join(page.lines) + "\n"
