"""The read API: GET /api/vms, /api/vms/<vmid> and /api/status, the guests as rows of JSON with their health."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from vmhealth import appcontext

from .auth import require_reader
from .exposition import is_monitored
from .health import classify
from .ingest import MB, vmid_text
from .service import Exporter
from .state import GuestKey

bp = Blueprint("api", __name__, url_prefix="/api")


def error(status: int, message: str, fields: dict[str, str] | None = None) -> tuple[Response, int]:
    """The JSON shape of every refusal of the exporter's API."""
    body: dict[str, Any] = {"success": False, "error": message}
    if fields:
        body["fields"] = fields
    return jsonify(body), status


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _mb(value: int | None) -> float | None:
    return round(value / MB, 1) if value is not None else None


def _vm_rows(cluster_filter: str | None = None, vmid_filter: int | None = None) -> list[dict[str, Any]]:
    exporter = appcontext.get(Exporter)
    config = exporter.config
    clusters, heartbeats = exporter.guests.view()
    now = time.time()
    keys: set[GuestKey] = set(heartbeats)
    for name, state in clusters.items():
        if state.snapshot:
            keys.update((name, vmid) for vmid in state.snapshot.guests)
    rows = []
    for cname, vmid in sorted(keys):
        if (cluster_filter and cname != cluster_filter) or (vmid_filter is not None and vmid != vmid_filter):
            continue
        state = clusters[cname]
        guest = state.snapshot.guests.get(vmid) if state.snapshot else None
        hb = heartbeats.get((cname, vmid))
        monitored = is_monitored(guest.tags if guest else (), config.exporter.monitor_tags,
                                 config.exporter.ignore_tags)
        health = classify(hb, guest, state, monitored, config.thresholds, now)
        ram_percent = None
        if hb and hb.mem_used is not None and hb.mem_total:
            ram_percent = round(100 * hb.mem_used / hb.mem_total, 1)
        rows.append({
            "id": f"{cname}/{vmid}",
            "cluster": cname,
            "vmid": str(vmid),
            "hostname": hb.hostname if hb else None,
            "name": guest.name if guest else None,
            "type": guest.type if guest else None,
            "node": guest.node if guest else (hb.node if hb else None),
            "status": guest.status if guest else (hb.status if hb else "unknown"),
            "lock": guest.lock or None if guest else None,
            "tags": list(guest.tags) if guest else [],
            "monitored": monitored,
            "health": health.state,
            "hung": health.hung,
            "cpuUsage": round(hb.cpu_ratio * 100, 2) if hb and hb.cpu_ratio is not None else None,
            "ramUsage": _mb(hb.mem_used) if hb else None,
            "ramTotal": _mb(hb.mem_total) if hb else None,
            "ramPercent": ram_percent,
            "diskUsage": _mb(hb.disk_used) if hb else None,
            "diskTotal": _mb(hb.disk_total) if hb else None,
            "uptime": hb.uptime if hb else None,
            "lastHeartbeat": _iso(hb.received) if hb else None,
            "isDown": health.is_down,
            "isWarning": health.is_warning,
        })
    return rows


@bp.get("/vms")
@require_reader
def list_vms() -> Response:
    return jsonify(_vm_rows(cluster_filter=request.args.get("cluster") or None))


@bp.get("/vms/<vmid>")
@require_reader
def get_vm(vmid: str) -> tuple[Response, int] | Response:
    number = vmid_text(vmid)
    if number is None:
        return error(400, f"vmid must be a number, got {vmid[:40]!r}")
    rows = _vm_rows(cluster_filter=request.args.get("cluster") or None, vmid_filter=number)
    if not rows:
        return error(404, f"no guest with vmid {vmid}")
    if len(rows) > 1:
        clusters = ", ".join(r["cluster"] for r in rows)
        return error(409, f"vmid {vmid} exists in clusters {clusters}; add ?cluster=NAME")
    return jsonify(rows[0])


@bp.get("/status")
@require_reader
def status() -> Response:
    exporter = appcontext.get(Exporter)
    rows = _vm_rows()
    counts = Counter(row["health"] for row in rows)
    clusters, _ = exporter.guests.view()
    limits = exporter.config.webhook.policy
    thresholds = exporter.config.thresholds
    return jsonify({
        "timestamp": _iso(time.time()),
        "vms": {"total": len(rows), "healthy": counts["healthy"], "warning": counts["warning"],
                "down": counts["down"], "hung": sum(1 for r in rows if r["hung"])},
        "config": {
            "staleTimeoutMs": int(thresholds.stale_timeout * 1000),
            "cpuThreshold": thresholds.cpu_percent,
            "ramThreshold": thresholds.ram_percent,
            "diskThreshold": thresholds.disk_percent,
            "autoResetEnabled": bool(limits.enabled and not limits.dry_run),
        },
        "clusters": {
            name: {"up": s.up, "lastPoll": _iso(s.last_success) if s.last_success else None,
                   "error": s.last_error or None}
            for name, s in clusters.items()
        },
    })
