"""POST /api/health/report: a guest's heartbeat, judged by its key, parsed, placed and stored.

`handle_report` decides every report; the view calls it for the framework's request and
`ingest.FastReports` for the ordinary one it answers alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request

from vmhealth import appcontext
from vmhealth.keys import same_secret
from vmhealth.process_counters import auth_failed

from .ingest import REPORT_PATH, BadJson, Report, decode_json, parse_report, vmid_text
from .service import Exporter
from .state import GuestKey

bp = Blueprint("ingest", __name__)
SHARED_KEY_REFUSED = (
    "this exporter accepts only per-VM keys: give the guest its own key, HMAC-SHA256(exporter.api_key, "
    "\"<cluster>:<vmid>\") in hex, which `vmhealth agent-key --cluster CLUSTER --vmid VMID` prints; or set "
    "exporter.per_vm_keys: false to accept the shared key (then any guest can report for any other)")


@dataclass(frozen=True)
class Refusal:
    """Why a report is not stored: the counter label, the HTTP status and the message."""

    result: str
    status: int
    message: str


@bp.post(REPORT_PATH)
def report() -> tuple[Response, int]:
    status, reply = handle_report(appcontext.get(Exporter), request.mimetype, request.headers.get("X-API-Key"),
                                  lambda: request.get_data(cache=False), request.remote_addr)
    return jsonify(reply), status


def handle_report(exporter: Exporter, mimetype: str, key: str | None, read_body: Callable[[], bytes],
                  address: str | None = None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON reply) of one heartbeat report, counted; also `FastReports`' handler."""
    result, status, message, fields = _ingest(exporter, mimetype, key, read_body)
    exporter.count(result)
    if status == 401:
        auth_failed(f"POST {REPORT_PATH}", "missing" if not key else "wrong", address, message)
    if status == 200:
        return 200, {"success": True, "message": message}
    reply: dict[str, Any] = {"success": False, "error": message}
    if fields:
        reply["fields"] = fields
    return status, reply


def _ingest(exporter: Exporter, mimetype: str, key: str | None, read_body: Callable[[], bytes],
            ) -> tuple[str, int, str, dict[str, str] | None]:
    """(result label, HTTP status, message, field problems) for one report."""
    if mimetype != "application/json":
        return "unsupported_media_type", 415, "send the report as JSON (Content-Type: application/json)", None
    if not key:
        return "unauthorized", 401, "missing X-API-Key header", None
    # The key is judged before the body is read where it can be: the shared key, a listed guest's key.
    shared = same_secret(key, exporter.config.exporter.api_key or "")
    if shared and exporter.config.exporter.per_vm_keys:
        return "unauthorized", 401, SHARED_KEY_REFUSED, None
    identity = None if shared else exporter.guests.key_owner(key)
    body = read_body()
    try:
        data = decode_json(body)
    except BadJson as exc:
        if not shared and identity is None:  # nothing about the body for a client whose key opens nothing
            return "unauthorized", 401, "wrong API key", None
        return "invalid", 400, str(exc), None
    if not shared and identity is None:
        identity = _claimed_identity(exporter, key, data)
        if identity is None:
            return "unauthorized", 401, "wrong API key", None
    parsed = parse_report(data, time.time(), identified=identity is not None)
    if not isinstance(parsed, Report):
        names = ", ".join(sorted(parsed))
        return "invalid", 400, f"invalid report: {names}", parsed
    target = _resolve(exporter, parsed, identity)
    if isinstance(target, Refusal):
        fields = {"cluster": target.message} if target.status == 400 else None
        return target.result, target.status, target.message, fields
    cluster, vmid = target
    if identity is not None and identity != (cluster, vmid):
        return "forbidden", 403, f"this key belongs to another guest, not to vmid {vmid}", None
    refusal = exporter.guests.admit(cluster, vmid)
    if refusal:
        return refusal[0], 404, refusal[1], None
    labels_dropped = exporter.guests.record(cluster, vmid, parsed.heartbeat, parsed.disks_dropped)
    if parsed.disks_dropped or labels_dropped:
        exporter.count_dropped({"disks_over_limit": parsed.disks_dropped, "label_rate": labels_dropped})
    return "accepted", 200, f"Health report received for {parsed.heartbeat.hostname}", None


def _claimed_identity(exporter: Exporter, key: str, data: dict[str, Any]) -> GuestKey | None:
    """A guest Proxmox does not list (yet): the guest the report claims to be, if the key is its key."""
    claimed_vmid = data.get("vmid")
    if isinstance(claimed_vmid, str):
        claimed_vmid = vmid_text(claimed_vmid)
    if isinstance(claimed_vmid, int) and not isinstance(claimed_vmid, bool):
        clusters = [data["cluster"]] if isinstance(data.get("cluster"), str) else list(exporter.guests.clusters)
        for cluster in clusters:
            if cluster in exporter.guests.clusters and exporter.guests.vm_key_matches(key, cluster, claimed_vmid):
                return cluster, claimed_vmid
    return None


def _resolve(exporter: Exporter, parsed: Report, identity: GuestKey | None) -> GuestKey | Refusal:
    """The (cluster, vmid) a report is for, or (result, status, message) when it cannot be told."""
    names = list(exporter.guests.clusters)
    if parsed.cluster is not None and parsed.cluster not in exporter.guests.clusters:
        return Refusal("invalid", 400, f"unknown cluster {parsed.cluster!r} (configured: {', '.join(names)})")
    vmid = parsed.vmid
    cluster = parsed.cluster
    if vmid is None and identity is not None:
        cluster, vmid = cluster or identity[0], identity[1]
    if vmid is None and parsed.uuid:
        found = exporter.guests.vmid_for_uuid(parsed.uuid)
        if found is None:
            return Refusal("unknown_guest", 404, f"no guest with SMBIOS UUID {parsed.uuid} is known yet; VM "
                           "configs are being read, the report will be accepted once it is found (or set agent.vmid)")
        if cluster is not None and found[0] != cluster:
            return Refusal("unknown_guest", 404, f"SMBIOS UUID {parsed.uuid} is a guest of cluster {found[0]!r}")
        cluster, vmid = found
    assert vmid is not None
    if cluster is None:
        if identity is not None:
            cluster = identity[0]
        elif len(names) == 1:
            cluster = names[0]
        else:
            listing = exporter.guests.clusters_listing(vmid)
            if len(listing) != 1:
                where = f"in clusters {', '.join(listing)}" if listing else "in no configured cluster"
                return Refusal("invalid", 400, f"vmid {vmid} is {where}; send \"cluster\" in the report")
            cluster = listing[0]
    if parsed.uuid:
        owner = exporter.guests.vmid_for_uuid(parsed.uuid, queue=False)
        if owner is not None and owner != (cluster, vmid):
            # whatever the key: a report never speaks for the guest whose UUID it borrows
            return Refusal("forbidden", 403, f"SMBIOS UUID {parsed.uuid} belongs to guest {owner[0]}/{owner[1]}, "
                           f"not to {cluster}/{vmid}")
    return cluster, vmid
