"""Collection with psutil faked: the edge cases a fleet of guests produces, and Windows' shapes."""

from __future__ import annotations

import logging
from collections import namedtuple
from typing import Any

import pytest

from vmhealth.agent.collect import MAX_DISKS, Collector
from vmhealth.agent.payload import MB, Identity, build

LinuxCpu = namedtuple("LinuxCpu", "user nice system idle iowait irq softirq steal guest guest_nice")
WindowsCpu = namedtuple("WindowsCpu", "user system idle interrupt dpc")
Mem = namedtuple("Mem", "total available percent used free")
Swap = namedtuple("Swap", "total used free percent sin sout")
Disk = namedtuple("Disk", "total used free percent")
Nic = namedtuple("Nic", "bytes_sent bytes_recv packets_sent packets_recv errin errout dropin dropout")


class FakePsutil:
    """psutil's functions the collector uses, with values and failures set by each test."""

    def __init__(self, cpu: list[Any], disks: dict[str, Any], nics: dict[str, Nic] | None = None,
                 swap: Any = None) -> None:
        self.cpu = list(cpu)
        self.disks = disks
        self.nics = nics if nics is not None else {"lo": Nic(9, 9, 0, 0, 0, 0, 0, 0),
                                                   "eth0": Nic(200, 100, 0, 0, 0, 0, 0, 0)}
        self.swap = swap if swap is not None else Swap(0, 0, 0, 0.0, 0, 0)
        self.mem = Mem(8 * 1024 * MB, 6 * 1024 * MB, 25.0, 1, 1)

    def boot_time(self) -> float:
        return 1_700_000_000.0

    def cpu_count(self) -> int:
        return 4

    def cpu_times(self) -> Any:
        return self.cpu.pop(0) if len(self.cpu) > 1 else self.cpu[0]

    def virtual_memory(self) -> Mem:
        return self.mem

    def swap_memory(self) -> Any:
        if isinstance(self.swap, Exception):
            raise self.swap
        return self.swap

    def disk_usage(self, path: str) -> Disk:
        value = self.disks[path]
        if isinstance(value, Exception):
            raise value
        return value

    def net_io_counters(self, pernic: bool = False) -> dict[str, Nic]:
        assert pernic
        return self.nics


def linux(**kwargs: Any) -> FakePsutil:
    cpus = [LinuxCpu(100, 0, 50, 800, 50, 0, 0, 0, 0, 0), LinuxCpu(160, 0, 70, 860, 60, 0, 0, 0, 5, 0)]
    return FakePsutil(kwargs.pop("cpu", cpus), kwargs.pop("disks", {"/": Disk(100 * MB, 40 * MB, 60 * MB, 40.0)}),
                      **kwargs)


def test_cpu_usage_covers_the_span_since_the_previous_reading() -> None:
    collector = Collector(ps=linux(), root="/", loadavg=lambda: (0.5, 0.25, 0.125))
    sample = collector.collect()
    # busy 60+20 = 80 of 80+60+10 = 150 (guest is inside user, not added again)
    assert sample.cpu_usage_ratio == pytest.approx(80 / 150)
    assert sample.cpu_seconds["user"] == 160
    assert sample.load == (0.5, 0.25, 0.125)
    assert sample.failed == []


def test_memory_used_is_total_minus_available_as_node_exporter_users_compute_it() -> None:
    sample = Collector(ps=linux(), root="/", loadavg=None).collect()
    assert sample.memory_total_bytes == 8 * 1024 * MB
    assert sample.memory_used_bytes == 2 * 1024 * MB
    report = build(sample, Identity(vmid=100))
    assert (report["ramUsage"], report["ramTotal"]) == (2048, 8192)
    assert report["vmid"] == "100"


def test_no_swap_reads_as_zero_and_a_swap_error_drops_only_swap(caplog: pytest.LogCaptureFixture) -> None:
    sample = Collector(ps=linux(), root="/", loadavg=None).collect()
    assert (sample.swap_total_bytes, sample.swap_used_bytes) == (0, 0)
    broken = Collector(ps=linux(swap=RuntimeError("no /proc/swaps in this container")), root="/", loadavg=None)
    sample = broken.collect()
    assert sample.swap_total_bytes is None
    assert sample.memory_total_bytes is not None and sample.failed == ["swap"]


def test_huge_disks_keep_exact_bytes_and_whole_megabytes() -> None:
    huge = 2**60 + 12345  # an exabyte volume: beyond any 32-bit or float-exact field
    collector = Collector(ps=linux(disks={"/": Disk(huge, huge - 1, 1, 100.0)}), root="/", loadavg=None)
    report = build(collector.collect(), Identity())
    assert report["diskTotalBytes"] == huge and isinstance(report["diskTotalBytes"], int)
    assert report["diskTotal"] == huge // MB


def test_a_failing_mount_is_dropped_logged_once_and_logged_again_when_it_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ps = linux(disks={"/": Disk(100, 40, 60, 40.0), "/data": FileNotFoundError(2, "No such file or directory"),
                      "/srv": Disk(1000, 1, 999, 0.1)})
    collector = Collector(["/data", "/srv", "/"], ps=ps, root="/", loadavg=None)
    with caplog.at_level(logging.INFO, logger="vmhealth.agent.collect"):
        samples = [collector.collect() for _ in range(5)]
        assert all([d.mountpoint for d in s.disks] == ["/srv"] for s in samples)
        assert all(s.root is not None and s.failed == ["filesystem /data"] for s in samples)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "/data" in warnings[0].getMessage()
        ps.disks["/data"] = Disk(500, 5, 495, 1.0)
        assert [d.mountpoint for d in collector.collect().disks] == ["/data", "/srv"]
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_at_most_16_disks_the_first_readable_in_the_configured_order(caplog: pytest.LogCaptureFixture) -> None:
    """The exporter keeps 16 disks per report; the agent sends those, the same ones every cycle."""
    mounts = [f"/m{i:02}" for i in range(20)]
    disks: dict[str, Any] = {"/": Disk(100, 40, 60, 40.0), **{m: Disk(1000, 1, 999, 0.1) for m in mounts}}
    disks["/m03"] = PermissionError(13, "Permission denied")
    with caplog.at_level(logging.WARNING, logger="vmhealth.agent.collect"):
        collector = Collector([*mounts, "/m05"], ps=linux(disks=disks), root="/", loadavg=None)
    assert any("20 mounts configured" in r.getMessage() for r in caplog.records)
    expected = [m for m in mounts if m != "/m03"][:MAX_DISKS]
    for _ in range(3):
        sample = collector.collect()
        assert [d.mountpoint for d in sample.disks] == expected
    body = build(sample, Identity())
    assert len(body["disks"]) == MAX_DISKS == 16


def test_the_root_volume_is_not_reported_twice_when_also_listed_as_a_mount() -> None:
    collector = Collector(["/"], ps=linux(), root="/", loadavg=None)
    sample = collector.collect()
    assert sample.root is not None and sample.disks == []


def test_permission_error_on_network_drops_network_only() -> None:
    ps = linux()
    ps.net_io_counters = lambda pernic=False: (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
    sample = Collector(ps=ps, root="/", loadavg=None).collect()
    assert sample.net_rx_bytes == {} and sample.failed == ["network"]
    assert "netRxBytes" not in build(sample, Identity())
    assert sample.memory_used_bytes is not None


def test_windows_shapes_system_drive_no_load_average_and_loopback_left_out() -> None:
    nics = {"Ethernet": Nic(1000, 5000, 0, 0, 0, 0, 0, 0), "Ethernet 2": Nic(1, 2, 0, 0, 0, 0, 0, 0),
            "Loopback Pseudo-Interface 1": Nic(77, 77, 0, 0, 0, 0, 0, 0)}
    ps = FakePsutil([WindowsCpu(10, 10, 80, 0, 0), WindowsCpu(40, 20, 120, 5, 5)],
                    {"C:\\": Disk(200 * MB, 50 * MB, 150 * MB, 25.0)}, nics=nics)
    sample = Collector(ps=ps, root="C:\\", loadavg=None).collect()
    assert sample.root is not None and sample.root.mountpoint == "C:\\"
    assert sample.load is None
    assert sample.cpu_usage_ratio == pytest.approx(40 / 80)  # idle is the only idle field on Windows
    assert sample.net_rx_bytes == {"Ethernet": 5000, "Ethernet 2": 2}
    report = build(sample, Identity(uuid="4c4c4544-0042-4410-8057-b4c04f4e3132"))
    assert "load1" not in report and report["netRxBytes"] == 5002 and report["netTxBytes"] == 1001
    assert report["diskUsage"] == 50 and report["uuid"].startswith("4c4c4544")


def test_cpu_reading_that_goes_backwards_gives_no_nonsense() -> None:
    cpus = [LinuxCpu(100, 0, 50, 800, 50, 0, 0, 0, 0, 0), LinuxCpu(100, 0, 50, 800, 50, 0, 0, 0, 0, 0)]
    sample = Collector(ps=linux(cpu=cpus), root="/", loadavg=None).collect()
    assert sample.cpu_usage_ratio is None
    assert "cpuUsage" not in build(sample, Identity())


def test_a_part_that_always_fails_never_stops_a_report() -> None:
    ps = linux()
    ps.virtual_memory = lambda: (_ for _ in ()).throw(OSError("psutil cannot read /proc/meminfo"))
    ps.boot_time = lambda: (_ for _ in ()).throw(OSError("no /proc/stat btime"))
    collector = Collector(ps=ps, root="/", loadavg=None)
    report = build(collector.collect(), Identity(vmid=7))
    assert report["status"] == "running" and report["vmid"] == "7"
    assert "ramUsage" not in report and "uptime" not in report and "cpuUsage" in report
