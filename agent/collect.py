"""One reading of the guest's health with psutil, the same on Linux and Windows.

Each part (cpu, memory, swap, root disk, each mount, network, load) is read on its own: a part that
fails (a vanished mount, a permission error, a psutil quirk of one OS) is left out of the sample and
logged once when it starts failing and once when it recovers, so a broken part never stops the
heartbeat and never floods the log. Things that cannot change while the agent runs (CPU count, boot
time, the root volume's path) are read once.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

log = logging.getLogger("vmhealth.agent.collect")

# Interfaces that carry no guest traffic; their counters would only double what the NICs see.
_LOOPBACK = ("lo", "Loopback Pseudo-Interface")
_INSIDE_OTHERS = frozenset({"guest", "guest_nice", "interrupt", "dpc"})
# The exporter keeps the first 16 disks of a report (vmhealth.exporter.state.MAX_DISKS); the agent
# sends no more: the first 16 of `agent.mounts` that it can read, in the configured order.
MAX_DISKS = 16


@dataclass
class DiskUsage:
    """Used and total bytes of one mounted filesystem."""

    mountpoint: str
    used_bytes: int
    total_bytes: int


@dataclass
class Sample:
    """Everything one collection cycle found; None (or absent) where a part could not be read."""

    timestamp: float
    hostname: str
    uptime_seconds: float | None = None
    boot_time_seconds: float | None = None
    cpu_count: int | None = None
    cpu_usage_ratio: float | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    swap_used_bytes: int | None = None
    swap_total_bytes: int | None = None
    root: DiskUsage | None = None
    disks: list[DiskUsage] = field(default_factory=list)
    net_rx_bytes: dict[str, int] = field(default_factory=dict)
    net_tx_bytes: dict[str, int] = field(default_factory=dict)
    load: tuple[float, float, float] | None = None
    failed: list[str] = field(default_factory=list)

    @property
    def net_rx_total(self) -> int | None:
        return sum(self.net_rx_bytes.values()) if self.net_rx_bytes else None

    @property
    def net_tx_total(self) -> int | None:
        return sum(self.net_tx_bytes.values()) if self.net_tx_bytes else None


def root_volume() -> str:
    """The system volume: `/` on POSIX, the system drive (`C:\\`) on Windows."""
    if sys.platform == "win32":
        return os.environ.get("SYSTEMDRIVE", "C:") + "\\"
    return "/"


def _default_loadavg() -> Callable[[], tuple[float, float, float]] | None:
    """os.getloadavg where the OS keeps a load average (not Windows, where psutil would fake one)."""
    return None if sys.platform == "win32" else getattr(os, "getloadavg", None)


class Collector:
    """Reads samples; keeps the previous CPU times so that each sample's CPU use covers one cycle."""

    def __init__(
        self, mounts: list[str] | None = None, ps: Any = psutil, root: str | None = None,
        loadavg: Callable[[], tuple[float, float, float]] | str | None = "os",
    ) -> None:
        """`ps`, `root` and `loadavg` are the OS's own unless a test gives another OS's shapes."""
        self.ps = ps
        self.root_path = root or root_volume()
        self.mounts = [m for m in dict.fromkeys(mounts or []) if m != self.root_path]
        if len(self.mounts) > MAX_DISKS:
            log.warning("%d mounts configured; each report carries the first %d that can be read, in the "
                        "configured order (the exporter keeps no more)", len(self.mounts), MAX_DISKS)
        self.loadavg = _default_loadavg() if loadavg == "os" else loadavg
        self._failing: set[str] = set()
        self._boot_time: float | None = self._part("boot_time", self.ps.boot_time)
        self._cpu_count: int | None = self._part("cpu_count", self.ps.cpu_count)
        self._prev_cpu: tuple[float, float] | None = None
        self._cpu_busy_idle()  # prime, so that the first sample's CPU use covers the time since start

    def _part(self, name: str, read: Any, *args: Any) -> Any:
        """`read(*args)`, or None after logging (once per failure spell) why part `name` is missing."""
        try:
            value = read(*args)
        except Exception as exc:
            if name not in self._failing:
                self._failing.add(name)
                log.warning("cannot read %s, leaving it out until it works again: %s: %s",
                            name, exc.__class__.__name__, exc)
            return None
        if name in self._failing:
            self._failing.discard(name)
            log.info("reading %s works again", name)
        return value

    def _cpu_busy_idle(self) -> tuple[dict[str, float], float | None] | None:
        times = self._part("cpu", self.ps.cpu_times)
        if times is None:
            return None
        fields = times._asdict()
        # Not added twice: guest time is inside user (Linux), interrupt and DPC time inside system (Windows).
        total = sum(v for k, v in fields.items() if k not in _INSIDE_OTHERS)
        idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
        ratio = None
        if self._prev_cpu is not None:
            d_total, d_idle = total - self._prev_cpu[0], idle - self._prev_cpu[1]
            if d_total > 0:
                ratio = min(1.0, max(0.0, 1.0 - d_idle / d_total))
        self._prev_cpu = (total, idle)
        return fields, ratio

    def collect(self) -> Sample:
        """One sample now. Never raises for a part that fails; see the module docstring."""
        now = time.time()
        sample = Sample(timestamp=now, hostname=socket.gethostname(), cpu_count=self._cpu_count)
        if self._boot_time:
            sample.boot_time_seconds = self._boot_time
            sample.uptime_seconds = max(0.0, now - self._boot_time)
        cpu = self._cpu_busy_idle()
        if cpu is not None:
            sample.cpu_seconds, sample.cpu_usage_ratio = cpu
        mem = self._part("memory", self.ps.virtual_memory)
        if mem is not None:
            sample.memory_total_bytes = int(mem.total)
            sample.memory_used_bytes = int(mem.total - mem.available)  # as node_exporter users compute it
        swap = self._part("swap", self.ps.swap_memory)
        if swap is not None:
            sample.swap_total_bytes, sample.swap_used_bytes = int(swap.total), int(swap.used)
        sample.root = self._disk(self.root_path)
        for mount in self.mounts:
            if len(sample.disks) == MAX_DISKS:
                break
            disk = self._disk(mount)
            if disk is not None:
                sample.disks.append(disk)
        nics = self._part("network", self.ps.net_io_counters, True)
        if nics is not None:
            for name, counters in nics.items():
                if name != _LOOPBACK[0] and not name.startswith(_LOOPBACK[1]):
                    sample.net_rx_bytes[name] = int(counters.bytes_recv)
                    sample.net_tx_bytes[name] = int(counters.bytes_sent)
        if self.loadavg is not None:
            sample.load = self._part("load", self.loadavg)
        sample.failed = sorted(self._failing)
        return sample

    def _disk(self, path: str) -> DiskUsage | None:
        usage = self._part(f"filesystem {path}", self.ps.disk_usage, path)
        if usage is None:
            return None
        return DiskUsage(path, int(usage.used), int(usage.total))
