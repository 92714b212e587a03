"""The exporter's /metrics page in the Prometheus text format, written directly and kept between scrapes.

A client-library collector builds an object per sample; at 10,000 guests with a dozen series each
that alone costs more than the whole scrape may take. Here every guest's lines are formatted once
and kept (`Page`): a scrape formats again only the guests whose heartbeat, Proxmox entry or
qmpstatus changed since the last scrape, joins the kept lines family by family, and serves the same
bytes (and the same gzip body) again while nothing changed. Every label value goes through `escape`,
so a hostname holding quotes, backslashes or newlines cannot break the page.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Iterable

from vmhealth.config import ExporterConfig, ThresholdsConfig
from vmhealth.process_counters import AUTH_FAILURES, AUTH_THROTTLED, CONNECTIONS_REFUSED, PROCESS_COUNTERS
from vmhealth.textformat import escape
from vmhealth.textformat import format_value as _num

from .state import ClusterState, GuestKey, GuestState, Heartbeat, PveGuest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# zlib level 1: on this repetitive text it compresses almost as well as level 6, three times faster.
GZIP_LEVEL = 1

# name -> (type, help); the order is the page's order.
FAMILIES: dict[str, tuple[str, str]] = {
    "vmhealth_heartbeat_timestamp_seconds": ("gauge", "Server time of the guest's last heartbeat."),
    "vmhealth_guest_cpu_usage_ratio": ("gauge", "Guest CPU use, 0-1, from its last heartbeat."),
    "vmhealth_guest_memory_used_bytes": ("gauge", "Guest memory in use (total - available)."),
    "vmhealth_guest_memory_total_bytes": ("gauge", "Guest memory size."),
    "vmhealth_guest_disk_used_bytes": ("gauge", "Guest disk space used (root volume unless mountpoint is set)."),
    "vmhealth_guest_disk_total_bytes": ("gauge", "Guest disk size (root volume unless mountpoint is set)."),
    "vmhealth_guest_uptime_seconds": ("gauge", "Guest uptime as the guest reported it."),
    "vmhealth_guest_load1": ("gauge", "Guest 1-minute load average, where the OS has one."),
    "vmhealth_guest_network_receive_bytes_total": ("counter", "Bytes the guest received, as it counts them."),
    "vmhealth_guest_network_transmit_bytes_total": ("counter", "Bytes the guest sent, as it counts them."),
    "vmhealth_guest_info": ("gauge", "Guest metadata; always 1."),
    "vmhealth_guest_monitored": ("gauge", "1 when the guest is expected to run an agent."),
    "vmhealth_pve_guest_running": ("gauge", "1 when Proxmox says the guest is running."),
    "vmhealth_pve_guest_locked": ("gauge", "1 while the guest has a config lock (backup, migrate, ...)."),
    "vmhealth_pve_guest_paused": ("gauge", "1 when a silent running guest's qmpstatus is not running."),
    "vmhealth_pve_guest_cpu_usage_ratio": ("gauge", "Guest CPU use, 0-1 of its vCPUs, as Proxmox measures it."),
    "vmhealth_pve_guest_uptime_seconds": ("gauge", "Guest uptime as Proxmox counts it (since its process started)."),
    "vmhealth_pve_guest_disk_read_bytes_total": ("counter", "Bytes the guest read from its disks (Proxmox diskread)."),
    "vmhealth_pve_guest_disk_written_bytes_total": (
        "counter", "Bytes the guest wrote to its disks (Proxmox diskwrite)."),
    "vmhealth_pve_guest_network_receive_bytes_total": (
        "counter", "Bytes the guest received on its network interfaces (Proxmox netin)."),
    "vmhealth_pve_guest_network_transmit_bytes_total": (
        "counter", "Bytes the guest transmitted on its network interfaces (Proxmox netout)."),
    "vmhealth_pve_guest_io_last_active_timestamp_seconds": (
        "gauge", "Time of the last poll that saw the running guest I/O-active: disk writes + network transmit "
                 "grew faster than thresholds.io_idle_bytes_per_second, or it was first seen, restarted or moved."),
    "vmhealth_pve_node_up": ("gauge", "1 when the node is online in the cluster."),
    "vmhealth_pve_cluster_quorate": ("gauge", "1 when the cluster is quorate."),
    "vmhealth_pve_up": ("gauge", "1 when the last poll of the cluster's API succeeded."),
    "vmhealth_pve_poll_duration_seconds": ("gauge", "How long the last poll took."),
    "vmhealth_pve_poll_timestamp_seconds": ("gauge", "Time of the last successful poll."),
    "vmhealth_pve_poll_errors_total": ("counter", "Failed polls of the cluster's API (no answer, timeout, error)."),
    "vmhealth_config_stale_timeout_seconds": ("gauge", "thresholds.stale_timeout of the vmhealth config."),
    "vmhealth_config_cpu_threshold_ratio": ("gauge", "thresholds.cpu_percent / 100."),
    "vmhealth_config_memory_threshold_ratio": ("gauge", "thresholds.ram_percent / 100."),
    "vmhealth_config_disk_threshold_ratio": ("gauge", "thresholds.disk_percent / 100."),
    "vmhealth_config_mass_loss_ratio": ("gauge", "thresholds.mass_loss_fraction."),
    "vmhealth_config_io_window_seconds": ("gauge", "thresholds.io_window of the vmhealth config."),
    "vmhealth_config_io_idle_threshold_bytes_per_second": ("gauge", "thresholds.io_idle_bytes_per_second."),
    "vmhealth_reports_total": ("counter", "Heartbeat reports received, by result."),
    CONNECTIONS_REFUSED.family: ("counter", CONNECTIONS_REFUSED.help),
    AUTH_FAILURES.family: ("counter", AUTH_FAILURES.help),
    AUTH_THROTTLED.family: ("counter", AUTH_THROTTLED.help),
    "vmhealth_report_values_dropped_total": (
        "counter", "Values stored heartbeats left out, by reason: disks_over_limit (entries after the first 16), "
                   "label_rate (a new hostname, node or mountpoint beyond a guest's allowance)."),
}
_HEADERS = {name: f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n" for name, (kind, help_text) in
            FAMILIES.items()}
# Families with a line per guest, kept between scrapes.
GUEST_FAMILIES = (
    "vmhealth_heartbeat_timestamp_seconds", "vmhealth_guest_cpu_usage_ratio", "vmhealth_guest_memory_used_bytes",
    "vmhealth_guest_memory_total_bytes", "vmhealth_guest_disk_used_bytes", "vmhealth_guest_disk_total_bytes",
    "vmhealth_guest_uptime_seconds", "vmhealth_guest_load1", "vmhealth_guest_network_receive_bytes_total",
    "vmhealth_guest_network_transmit_bytes_total", "vmhealth_guest_info", "vmhealth_guest_monitored",
    "vmhealth_pve_guest_running", "vmhealth_pve_guest_locked", "vmhealth_pve_guest_paused",
    "vmhealth_pve_guest_cpu_usage_ratio", "vmhealth_pve_guest_uptime_seconds",
    "vmhealth_pve_guest_disk_read_bytes_total", "vmhealth_pve_guest_disk_written_bytes_total",
    "vmhealth_pve_guest_network_receive_bytes_total", "vmhealth_pve_guest_network_transmit_bytes_total",
    "vmhealth_pve_guest_io_last_active_timestamp_seconds",
)

# The families made from the Proxmox entry (and the hostname), kept while those do not change.
_PVE_FAMILIES = ("vmhealth_pve_guest_running", "vmhealth_pve_guest_locked", "vmhealth_pve_guest_paused",
                 "vmhealth_guest_info", "vmhealth_guest_monitored")
# The families made from the Proxmox entry's activity fields (most change every poll): family -> field.
_ACTIVITY_FAMILIES = {
    "vmhealth_pve_guest_cpu_usage_ratio": "cpu",
    "vmhealth_pve_guest_uptime_seconds": "uptime",
    "vmhealth_pve_guest_disk_read_bytes_total": "diskread",
    "vmhealth_pve_guest_disk_written_bytes_total": "diskwrite",
    "vmhealth_pve_guest_network_receive_bytes_total": "netin",
    "vmhealth_pve_guest_network_transmit_bytes_total": "netout",
    "vmhealth_pve_guest_io_last_active_timestamp_seconds": "io_last_active",
}


def is_monitored(tags: Iterable[str], monitor_tags: list[str], ignore_tags: list[str]) -> bool:
    """Whether a guest with these Proxmox tags is expected to run an agent."""
    tags = set(tags)
    if tags & set(ignore_tags):
        return False
    return not monitor_tags or bool(tags & set(monitor_tags))


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (and does not refuse it with q=0)."""
    for item in accept_encoding.lower().split(","):
        name, _, params = item.partition(";")
        if name.strip() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=")
            return not (params and quality.replace(".", "").strip("0") == "")
    return False


def _same_labels(old: PveGuest | None, new: PveGuest | None) -> bool:
    """Whether two polls' entries of a guest render the same `_PVE_FAMILIES` lines."""
    if old is new:
        return True
    if old is None or new is None:
        return False
    return (old.node == new.node and old.name == new.name and old.type == new.type and old.status == new.status
            and old.lock == new.lock and old.tags == new.tags)


def _same_activity(old: PveGuest | None, new: PveGuest | None) -> bool:
    """Whether two polls' entries of a guest render the same `_ACTIVITY_FAMILIES` values."""
    if old is new:
        return True
    if old is None or new is None:
        return False
    return (old.diskwrite == new.diskwrite and old.netout == new.netout and old.io_last_active == new.io_last_active
            and old.uptime == new.uptime and old.cpu == new.cpu and old.diskread == new.diskread
            and old.netin == new.netin)


class _Entry:
    """What a guest's kept lines were made from, and the lines (family -> text)."""

    __slots__ = ("base", "guest", "heartbeat", "hostname", "lines", "node", "qmp")

    def __init__(self, base: str, node: str, hostname: str, guest: PveGuest | None, heartbeat: Heartbeat | None,
                 qmp: str | None, lines: dict[str, str]):
        self.base, self.node, self.hostname, self.guest = base, node, hostname, guest
        self.heartbeat, self.qmp, self.lines = heartbeat, qmp, lines


class _Chunk:
    """One family's part of the page: its bytes, and the same compressed as a raw deflate segment."""

    __slots__ = ("data", "deflated")

    def __init__(self, data: bytes):
        self.data = data
        self.deflated: bytes | None = None

    def deflate(self) -> bytes:
        if self.deflated is None:
            # Raw deflate ending on a byte boundary (sync flush, no final block): segments of
            # independent compressors concatenate into one valid deflate stream.
            compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)
            self.deflated = compressor.compress(self.data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        return self.deflated


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, no mtime, unknown OS
_DEFLATE_END = b"\x03\x00"  # an empty final block


class Page:
    """The /metrics page of one exporter, updated guest by guest; safe to call from several threads.

    Kept: each guest's lines (formatted again only when its inputs changed), each family's bytes and
    their compressed form (made again only when a line of the family changed). A gzip scrape is the
    kept deflate segments joined under one gzip header and trailer.
    """

    def __init__(self, exporter: ExporterConfig, thresholds: ThresholdsConfig):
        self.exporter = exporter
        self.thresholds = thresholds
        self._lock = threading.Lock()
        self._entries: dict[GuestKey, _Entry] = {}
        self._families: dict[str, dict[GuestKey, str]] = {name: {} for name in GUEST_FAMILIES}
        self._dirty: set[str] = set(FAMILIES)
        self._chunks: dict[str, _Chunk] = {}
        self._static: dict[str, str] = {}
        self._clusters: dict[str, str] = {}  # cluster name -> escaped
        self._body: bytes | None = None
        self._gzip: bytes | None = None

    def render(self, clusters: dict[str, ClusterState], heartbeats: dict[GuestKey, Heartbeat],
               reports: dict[str, int], keys: set[GuestKey] | None = None, names: set[str] | None = None) -> bytes:
        """The whole page as UTF-8 bytes.

        `keys`/`names`: the guests and clusters changed since the last call (`GuestState.page_view`);
        None compares every guest.
        """
        with self._lock:
            self._update(clusters, heartbeats, reports, keys, names)
            return self._plain()

    def render_gzip(self, clusters: dict[str, ClusterState], heartbeats: dict[GuestKey, Heartbeat],
                    reports: dict[str, int], keys: set[GuestKey] | None = None,
                    names: set[str] | None = None) -> bytes:
        """The page gzip-compressed; only the families that changed are compressed again."""
        with self._lock:
            self._update(clusters, heartbeats, reports, keys, names)
            return self._gzipped()

    def scrape(self, guests: GuestState, reports: dict[str, int], accept_encoding: str,
               dropped: dict[str, int] | None = None) -> tuple[bytes, dict[str, str]]:
        """The body and headers of a scrape of `guests`: gzip when the scraper accepts it (Prometheus does).

        The store's changes are taken under the page's lock, so that the background step and a scrape
        apply them in the order they were taken.
        """
        with self._lock:
            clusters, heartbeats, keys, names = guests.page_view()
            self._update(clusters, heartbeats, reports, keys, names, dropped)
            if accepts_gzip(accept_encoding):
                return self._gzipped(), {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
            return self._plain(), {"Vary": "Accept-Encoding"}

    def absorb(self, guests: GuestState) -> None:
        """Format the guests changed since the last call now, between scrapes (the exporter calls this
        every second), so that a scrape is left with the last second's changes, joining and compressing."""
        with self._lock:
            self._update_guests(*guests.page_view())

    def _plain(self) -> bytes:
        if self._body is None:
            self._body = b"".join(chunk.data for chunk in self._chunks.values())
        return self._body

    def _gzipped(self) -> bytes:
        if self._gzip is None:
            crc, size = 0, 0
            parts = [_GZIP_HEADER]
            for chunk in self._chunks.values():
                crc = zlib.crc32(chunk.data, crc)
                size += len(chunk.data)
                parts.append(chunk.deflate())
            parts += [_DEFLATE_END, struct.pack("<II", crc, size & 0xFFFFFFFF)]
            self._gzip = b"".join(parts)
        return self._gzip

    def _update(self, clusters: dict[str, ClusterState], heartbeats: dict[GuestKey, Heartbeat],
                reports: dict[str, int], keys: set[GuestKey] | None, names: set[str] | None,
                dropped: dict[str, int] | None = None) -> None:
        self._update_guests(clusters, heartbeats, keys, names)
        for name, text in self._static_lines(clusters, reports, dropped or {}).items():
            if self._static.get(name) != text:
                self._static[name] = text
                self._dirty.add(name)
        if not self._dirty:
            return
        for name, header in _HEADERS.items():
            if name in self._dirty or name not in self._chunks:
                kept = self._families.get(name)
                text = "".join(kept.values()) if kept is not None else self._static[name]
                self._chunks[name] = _Chunk((header + text).encode())
        self._dirty.clear()
        self._body = self._gzip = None

    def _escaped_cluster(self, name: str) -> str:
        escaped = self._clusters.get(name)
        if escaped is None:
            escaped = self._clusters[name] = escape(name)
        return escaped

    def _update_guests(self, clusters: dict[str, ClusterState], heartbeats: dict[GuestKey, Heartbeat],
                       keys: set[GuestKey] | None, names: set[str] | None) -> None:
        """Format again the guests whose inputs changed; forget the gone ones."""
        if keys is None or names is None:
            keys, names = set(heartbeats) | self._entries.keys(), set(clusters)
        else:
            keys = set(keys)
        for cname in names:
            state = clusters.get(cname)
            if state is not None and state.snapshot is not None:
                keys.update((cname, vmid) for vmid in state.snapshot.guests)
            keys.update(key for key in self._entries if key[0] == cname)
        for key in keys:
            state = clusters.get(key[0])
            guest = state.snapshot.guests.get(key[1]) if state is not None and state.snapshot is not None else None
            hb = heartbeats.get(key)
            entry = self._entries.get(key)
            if guest is None and hb is None:
                if entry is not None:
                    self._forget(key, entry)
                continue
            qmp = state.paused.get(key[1]) if guest is not None and state is not None else None
            if entry is not None and entry.heartbeat is hb and entry.qmp == qmp and \
                    _same_labels(entry.guest, guest) and _same_activity(entry.guest, guest):
                entry.guest = guest
                continue
            self._store(key, entry, guest, hb, qmp)

    def _forget(self, key: GuestKey, entry: _Entry) -> None:
        del self._entries[key]
        for family in entry.lines:
            del self._families[family][key]
            self._dirty.add(family)

    def _store(self, key: GuestKey, entry: _Entry | None, guest: PveGuest | None, hb: Heartbeat | None,
               qmp: str | None) -> None:
        node = guest.node if guest is not None else (hb.node if hb is not None else "")
        hostname = hb.hostname if hb is not None else ""
        if entry is not None and entry.node == node:
            base = entry.base
        else:
            base = f'cluster="{self._escaped_cluster(key[0])}",node="{escape(node)}",vmid="{key[1]}"'
        old = entry.lines if entry is not None else {}
        lines: dict[str, str] = {}
        if guest is not None:
            if entry is not None and entry.base is base and entry.qmp == qmp and entry.hostname == hostname \
                    and entry.guest is not None and _same_labels(entry.guest, guest):
                for family in _PVE_FAMILIES:
                    if family in old:
                        lines[family] = old[family]
            else:
                self._pve_lines(lines, base, guest, hostname, qmp)
            if entry is not None and entry.base is base and _same_activity(entry.guest, guest):
                for family in _ACTIVITY_FAMILIES:
                    if family in old:
                        lines[family] = old[family]
            else:
                _activity_lines(lines, base, guest)
        if hb is not None:
            _heartbeat_lines(lines, base, hb)
        families, dirty = self._families, self._dirty
        if old.keys() != lines.keys():
            for family in old.keys() - lines.keys():
                del families[family][key]
                dirty.add(family)
        for family, text in lines.items():
            if old.get(family) != text:
                families[family][key] = text
                dirty.add(family)
        self._entries[key] = _Entry(base, node, hostname, guest, hb, qmp, lines)

    def _pve_lines(self, lines: dict[str, str], base: str, guest: PveGuest, hostname: str, qmp: str | None) -> None:
        exporter = self.exporter
        lines["vmhealth_pve_guest_running"] = \
            f'vmhealth_pve_guest_running{{{base},type="{guest.type}"}} {int(guest.running)}\n'
        if guest.lock:
            lines["vmhealth_pve_guest_locked"] = f'vmhealth_pve_guest_locked{{{base},lock="{escape(guest.lock)}"}} 1\n'
        if qmp:
            lines["vmhealth_pve_guest_paused"] = f'vmhealth_pve_guest_paused{{{base},qmpstatus="{escape(qmp)}"}} 1\n'
        lines["vmhealth_guest_info"] = (
            f'vmhealth_guest_info{{{base},name="{escape(guest.name)}",type="{guest.type}",'
            f'hostname="{escape(hostname)}",tags="{escape(";".join(guest.tags))}"}} 1\n'
        )
        monitored = is_monitored(guest.tags, exporter.monitor_tags, exporter.ignore_tags)
        lines["vmhealth_guest_monitored"] = f"vmhealth_guest_monitored{{{base}}} {int(monitored)}\n"

    def _static_lines(self, clusters: dict[str, ClusterState], reports: dict[str, int],
                      dropped: dict[str, int]) -> dict[str, str]:
        """family -> text of the per-cluster and counter families (a few lines; formatted every scrape)."""
        lines: dict[str, list[str]] = {name: [] for name in FAMILIES if name not in self._families}
        thresholds = self.thresholds
        for cname, state in clusters.items():
            c = self._escaped_cluster(cname)
            snapshot = state.snapshot
            lines["vmhealth_pve_up"].append(f'vmhealth_pve_up{{cluster="{c}"}} {int(state.up)}\n')
            lines["vmhealth_pve_poll_duration_seconds"].append(
                f'vmhealth_pve_poll_duration_seconds{{cluster="{c}"}} {_num(state.poll_duration)}\n')
            lines["vmhealth_pve_poll_timestamp_seconds"].append(
                f'vmhealth_pve_poll_timestamp_seconds{{cluster="{c}"}} {_num(state.last_success)}\n')
            lines["vmhealth_pve_poll_errors_total"].append(
                f'vmhealth_pve_poll_errors_total{{cluster="{c}"}} {state.poll_errors}\n')
            for family, value in (
                ("vmhealth_config_stale_timeout_seconds", thresholds.stale_timeout),
                ("vmhealth_config_cpu_threshold_ratio", thresholds.cpu_percent / 100),
                ("vmhealth_config_memory_threshold_ratio", thresholds.ram_percent / 100),
                ("vmhealth_config_disk_threshold_ratio", thresholds.disk_percent / 100),
                ("vmhealth_config_mass_loss_ratio", thresholds.mass_loss_fraction),
                ("vmhealth_config_io_window_seconds", thresholds.io_window),
                ("vmhealth_config_io_idle_threshold_bytes_per_second", thresholds.io_idle_bytes_per_second),
            ):
                lines[family].append(f'{family}{{cluster="{c}"}} {_num(float(value))}\n')
            if snapshot is None:
                continue
            lines["vmhealth_pve_cluster_quorate"].append(
                f'vmhealth_pve_cluster_quorate{{cluster="{c}"}} {int(snapshot.quorate)}\n')
            for node, online in sorted(snapshot.nodes.items()):
                lines["vmhealth_pve_node_up"].append(
                    f'vmhealth_pve_node_up{{cluster="{c}",node="{escape(node)}"}} {int(online)}\n')
        for result, count in sorted(reports.items()):
            lines["vmhealth_reports_total"].append(f'vmhealth_reports_total{{result="{result}"}} {count}\n')
        for counter in PROCESS_COUNTERS:
            lines[counter.family].extend(counter.samples())
        for reason, count in sorted(dropped.items()):
            lines["vmhealth_report_values_dropped_total"].append(
                f'vmhealth_report_values_dropped_total{{reason="{reason}"}} {count}\n')
        return {name: "".join(text) for name, text in lines.items()}


def _activity_lines(lines: dict[str, str], base: str, guest: PveGuest) -> None:
    """A Proxmox entry's activity series, family -> text; a field Proxmox did not give has no line."""
    for family, field in _ACTIVITY_FAMILIES.items():
        value = getattr(guest, field)
        if value is None:
            continue
        if field == "cpu":
            value = round(value, 6)
        elif field == "io_last_active":
            value = round(value, 3)
        lines[family] = f"{family}{{{base}}} {_num(value)}\n"


def _heartbeat_lines(lines: dict[str, str], base: str, hb: Heartbeat) -> None:
    """A heartbeat's series, family -> text."""
    # Milliseconds and six digits are all these carry; 0.45230000000000004 would cost bytes on every scrape.
    lines["vmhealth_heartbeat_timestamp_seconds"] = f"vmhealth_heartbeat_timestamp_seconds{{{base}}} " \
                                                    f"{_num(round(hb.received, 3))}\n"
    if hb.cpu_ratio is not None:
        lines["vmhealth_guest_cpu_usage_ratio"] = \
            f"vmhealth_guest_cpu_usage_ratio{{{base}}} {_num(round(hb.cpu_ratio, 6))}\n"
    if hb.mem_used is not None:
        lines["vmhealth_guest_memory_used_bytes"] = f"vmhealth_guest_memory_used_bytes{{{base}}} {hb.mem_used}\n"
    if hb.mem_total is not None:
        lines["vmhealth_guest_memory_total_bytes"] = f"vmhealth_guest_memory_total_bytes{{{base}}} {hb.mem_total}\n"
    used = [f"vmhealth_guest_disk_used_bytes{{{base}}} {hb.disk_used}\n"] if hb.disk_used is not None else []
    total = [f"vmhealth_guest_disk_total_bytes{{{base}}} {hb.disk_total}\n"] if hb.disk_total is not None else []
    for disk in hb.disks:
        mp = escape(disk.mountpoint)
        used.append(f'vmhealth_guest_disk_used_bytes{{{base},mountpoint="{mp}"}} {disk.used_bytes}\n')
        total.append(f'vmhealth_guest_disk_total_bytes{{{base},mountpoint="{mp}"}} {disk.total_bytes}\n')
    if used:
        lines["vmhealth_guest_disk_used_bytes"] = "".join(used)
    if total:
        lines["vmhealth_guest_disk_total_bytes"] = "".join(total)
    if hb.uptime is not None:
        lines["vmhealth_guest_uptime_seconds"] = f"vmhealth_guest_uptime_seconds{{{base}}} {_num(hb.uptime)}\n"
    if hb.load1 is not None:
        lines["vmhealth_guest_load1"] = f"vmhealth_guest_load1{{{base}}} {_num(hb.load1)}\n"
    if hb.net_rx is not None:
        lines["vmhealth_guest_network_receive_bytes_total"] = \
            f"vmhealth_guest_network_receive_bytes_total{{{base}}} {hb.net_rx}\n"
    if hb.net_tx is not None:
        lines["vmhealth_guest_network_transmit_bytes_total"] = \
            f"vmhealth_guest_network_transmit_bytes_total{{{base}}} {hb.net_tx}\n"


def render(
    clusters: dict[str, ClusterState],
    heartbeats: dict[GuestKey, Heartbeat],
    exporter: ExporterConfig,
    thresholds: ThresholdsConfig,
    reports: dict[str, int],
) -> str:
    """The whole /metrics page, formatted from nothing (the exporter keeps a `Page` instead)."""
    return Page(exporter, thresholds).render(clusters, heartbeats, reports).decode()
