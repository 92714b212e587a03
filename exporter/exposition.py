"""The exporter's /metrics page in the Prometheus text format, written directly.

A client-library collector builds an object per sample; at 10,000 guests with a dozen series each
that alone costs more than the whole scrape may take. Here each family is a list of preformatted
lines built from one pass over the state, and every label value goes through `escape`, so a
hostname holding quotes, backslashes or newlines cannot break the page.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace

from vmhealth.exporter.state import ClusterState, GuestKey, Heartbeat
from vmhealth.textformat import escape
from vmhealth.textformat import format_value as _num

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

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
    "vmhealth_pve_node_up": ("gauge", "1 when the node is online in the cluster."),
    "vmhealth_pve_cluster_quorate": ("gauge", "1 when the cluster is quorate."),
    "vmhealth_pve_up": ("gauge", "1 when the last poll of the cluster's API succeeded."),
    "vmhealth_pve_poll_duration_seconds": ("gauge", "How long the last poll took."),
    "vmhealth_pve_poll_timestamp_seconds": ("gauge", "Time of the last successful poll."),
    "vmhealth_config_stale_timeout_seconds": ("gauge", "thresholds.stale_timeout of the vmhealth config."),
    "vmhealth_config_cpu_threshold_ratio": ("gauge", "thresholds.cpu_percent / 100."),
    "vmhealth_config_memory_threshold_ratio": ("gauge", "thresholds.ram_percent / 100."),
    "vmhealth_config_disk_threshold_ratio": ("gauge", "thresholds.disk_percent / 100."),
    "vmhealth_config_mass_loss_ratio": ("gauge", "thresholds.mass_loss_fraction."),
    "vmhealth_reports_total": ("counter", "Heartbeat reports received, by result."),
}


def is_monitored(tags: Iterable[str], monitor_tags: list[str], ignore_tags: list[str]) -> bool:
    """Whether a guest with these Proxmox tags is expected to run an agent."""
    tags = set(tags)
    if tags & set(ignore_tags):
        return False
    return not monitor_tags or bool(tags & set(monitor_tags))


def render(
    clusters: dict[str, ClusterState],
    heartbeats: dict[GuestKey, Heartbeat],
    config: SimpleNamespace,
    reports: dict[str, int],
) -> str:
    """The whole /metrics page."""
    lines: dict[str, list[str]] = {name: [] for name in FAMILIES}
    monitor_tags, ignore_tags = config.exporter.monitor_tags, config.exporter.ignore_tags
    thresholds = config.thresholds

    guest_labels: dict[GuestKey, str] = {}
    for cname, state in clusters.items():
        c = escape(cname)
        snapshot = state.snapshot
        lines["vmhealth_pve_up"].append(f'vmhealth_pve_up{{cluster="{c}"}} {int(state.up)}\n')
        lines["vmhealth_pve_poll_duration_seconds"].append(
            f'vmhealth_pve_poll_duration_seconds{{cluster="{c}"}} {_num(state.poll_duration)}\n')
        lines["vmhealth_pve_poll_timestamp_seconds"].append(
            f'vmhealth_pve_poll_timestamp_seconds{{cluster="{c}"}} {_num(state.last_success)}\n')
        for family, value in (
            ("vmhealth_config_stale_timeout_seconds", thresholds.stale_timeout),
            ("vmhealth_config_cpu_threshold_ratio", thresholds.cpu_percent / 100),
            ("vmhealth_config_memory_threshold_ratio", thresholds.ram_percent / 100),
            ("vmhealth_config_disk_threshold_ratio", thresholds.disk_percent / 100),
            ("vmhealth_config_mass_loss_ratio", thresholds.mass_loss_fraction),
        ):
            lines[family].append(f'{family}{{cluster="{c}"}} {_num(float(value))}\n')
        if snapshot is None:
            continue
        lines["vmhealth_pve_cluster_quorate"].append(
            f'vmhealth_pve_cluster_quorate{{cluster="{c}"}} {int(snapshot.quorate)}\n')
        node_up = lines["vmhealth_pve_node_up"]
        for node, online in sorted(snapshot.nodes.items()):
            node_up.append(f'vmhealth_pve_node_up{{cluster="{c}",node="{escape(node)}"}} {int(online)}\n')
        running, locked, paused = (lines["vmhealth_pve_guest_running"], lines["vmhealth_pve_guest_locked"],
                                   lines["vmhealth_pve_guest_paused"])
        info, monitored = lines["vmhealth_guest_info"], lines["vmhealth_guest_monitored"]
        for vmid, guest in snapshot.guests.items():
            base = f'cluster="{c}",node="{escape(guest.node)}",vmid="{vmid}"'
            guest_labels[(cname, vmid)] = base
            running.append(f'vmhealth_pve_guest_running{{{base},type="{guest.type}"}} {int(guest.running)}\n')
            if guest.lock:
                locked.append(f'vmhealth_pve_guest_locked{{{base},lock="{escape(guest.lock)}"}} 1\n')
            qmp = state.paused.get(vmid)
            if qmp:
                paused.append(f'vmhealth_pve_guest_paused{{{base},qmpstatus="{escape(qmp)}"}} 1\n')
            hb = heartbeats.get((cname, vmid))
            hostname = escape(hb.hostname) if hb else ""
            info.append(
                f'vmhealth_guest_info{{{base},name="{escape(guest.name)}",type="{guest.type}",'
                f'hostname="{hostname}",tags="{escape(";".join(guest.tags))}"}} 1\n'
            )
            monitored.append(
                f'vmhealth_guest_monitored{{{base}}} {int(is_monitored(guest.tags, monitor_tags, ignore_tags))}\n')

    _render_heartbeats(lines, heartbeats, guest_labels)
    for result, count in sorted(reports.items()):
        lines["vmhealth_reports_total"].append(f'vmhealth_reports_total{{result="{result}"}} {count}\n')

    out: list[str] = []
    for name, (kind, help_text) in FAMILIES.items():
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
        out.extend(lines[name])
    return "".join(out)


def _render_heartbeats(
    lines: dict[str, list[str]], heartbeats: dict[GuestKey, Heartbeat], guest_labels: dict[GuestKey, str]
) -> None:
    ts, cpu = lines["vmhealth_heartbeat_timestamp_seconds"], lines["vmhealth_guest_cpu_usage_ratio"]
    mem_used, mem_total = lines["vmhealth_guest_memory_used_bytes"], lines["vmhealth_guest_memory_total_bytes"]
    disk_used, disk_total = lines["vmhealth_guest_disk_used_bytes"], lines["vmhealth_guest_disk_total_bytes"]
    uptime, load1 = lines["vmhealth_guest_uptime_seconds"], lines["vmhealth_guest_load1"]
    rx, tx = lines["vmhealth_guest_network_receive_bytes_total"], lines["vmhealth_guest_network_transmit_bytes_total"]
    for key, hb in heartbeats.items():
        base = guest_labels.get(key)
        if base is None:  # a guest Proxmox does not list (yet): the node it reported
            base = f'cluster="{escape(key[0])}",node="{escape(hb.node)}",vmid="{key[1]}"'
        ts.append(f"vmhealth_heartbeat_timestamp_seconds{{{base}}} {_num(hb.received)}\n")
        if hb.cpu_ratio is not None:
            cpu.append(f"vmhealth_guest_cpu_usage_ratio{{{base}}} {_num(hb.cpu_ratio)}\n")
        if hb.mem_used is not None:
            mem_used.append(f"vmhealth_guest_memory_used_bytes{{{base}}} {hb.mem_used}\n")
        if hb.mem_total is not None:
            mem_total.append(f"vmhealth_guest_memory_total_bytes{{{base}}} {hb.mem_total}\n")
        if hb.disk_used is not None:
            disk_used.append(f"vmhealth_guest_disk_used_bytes{{{base}}} {hb.disk_used}\n")
        if hb.disk_total is not None:
            disk_total.append(f"vmhealth_guest_disk_total_bytes{{{base}}} {hb.disk_total}\n")
        for disk in hb.disks:
            mp = escape(disk.mountpoint)
            disk_used.append(f'vmhealth_guest_disk_used_bytes{{{base},mountpoint="{mp}"}} {disk.used_bytes}\n')
            disk_total.append(f'vmhealth_guest_disk_total_bytes{{{base},mountpoint="{mp}"}} {disk.total_bytes}\n')
        if hb.uptime is not None:
            uptime.append(f"vmhealth_guest_uptime_seconds{{{base}}} {_num(hb.uptime)}\n")
        if hb.load1 is not None:
            load1.append(f"vmhealth_guest_load1{{{base}}} {_num(hb.load1)}\n")
        if hb.net_rx is not None:
            rx.append(f"vmhealth_guest_network_receive_bytes_total{{{base}}} {hb.net_rx}\n")
        if hb.net_tx is not None:
            tx.append(f"vmhealth_guest_network_transmit_bytes_total{{{base}}} {hb.net_tx}\n")
