"""Helpers for the exporter suites: configurations and Proxmox answers in the real shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vmhealth.config import Config, load

API_KEY = "test-shared-agent-key"
PVE = "https://pve1.example.org:8006/api2/json"


def exporter_config(tmp_path: Path, clusters: tuple[str, ...] = ("lab",), thresholds: dict | None = None,
                    **exporter: Any) -> Config:
    raw: dict[str, Any] = {
        "clusters": [
            {"name": name, "host": f"pve-{name}.example.org:8006" if i else "pve1.example.org:8006",
             "token_id": "monitor@pve!vmhealth", "token_secret": "secret-uuid", "timeout": "2s"}
            for i, name in enumerate(clusters)
        ],
        # the shared key for every guest: explicitly allowed, as unit tests play many guests with one key
        "exporter": {"api_key": API_KEY, "database_url": f"sqlite:///{tmp_path}/exporter.db", "per_vm_keys": False,
                     **exporter},
    }
    if thresholds is not None:
        raw["thresholds"] = thresholds
    return load(raw=raw, components=("exporter",), environ={})


def resource(vmid: int, node: str = "pve1", status: str = "running", kind: str = "qemu", **extra: Any) -> dict:
    """A /cluster/resources?type=vm item as Proxmox returns it (0/1 booleans, absent fields omitted)."""
    item = {
        "id": f"{kind}/{vmid}", "type": kind, "vmid": vmid, "node": node, "name": f"vm{vmid}", "status": status,
        "maxcpu": 2, "maxmem": 4294967296, "mem": 1073741824, "maxdisk": 34359738368, "disk": 0,
        "cpu": 0.02, "uptime": 3600 if status == "running" else 0, "netin": 1000, "netout": 2000,
        "diskread": 0, "diskwrite": 0, "template": 0,
    }
    item.update(extra)
    return item


def cluster_status(nodes: dict[str, bool], quorate: bool = True, name: str = "lab") -> list[dict]:
    out: list[dict] = [{"type": "cluster", "id": "cluster", "name": name, "nodes": len(nodes),
                        "quorate": int(quorate), "version": 3}]
    for i, (node, online) in enumerate(nodes.items(), start=1):
        out.append({"type": "node", "id": f"node/{node}", "name": node, "nodeid": i, "online": int(online),
                    "ip": f"192.0.2.{i}", "local": int(i == 1), "level": ""})
    return out


def report(vmid: int | str | None = 100, **fields: Any) -> dict:
    """The original agent payload (camelCase, MB)."""
    payload = {
        "hostname": "web-server-01", "vmid": str(vmid) if vmid is not None else None, "node": "pve1",
        "status": "running", "cpuUsage": 45.2, "ramUsage": 2048, "ramTotal": 4096, "diskUsage": 50000,
        "diskTotal": 100000, "uptime": 3600, "timestamp": 1672531200,
    }
    if vmid is None:
        del payload["vmid"]
    payload.update(fields)
    return payload
