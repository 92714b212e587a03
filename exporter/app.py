"""The exporter's Flask application: ingest, /metrics, the read API and the probes."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from types import SimpleNamespace
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from vmhealth import __version__, openapi
from vmhealth.config import is_loopback
from vmhealth.exporter.exposition import CONTENT_TYPE, Page, is_monitored
from vmhealth.exporter.health import classify
from vmhealth.exporter.ingest import (
    REPORT_PATH,
    BadJson,
    FastReports,
    Report,
    decode_json,
    parse_report,
    vmid_text,
)
from vmhealth.exporter.persistence import GuestStateArchive, WriteBehind
from vmhealth.exporter.poller import ClusterPoller
from vmhealth.exporter.state import GuestKey, GuestState
from vmhealth.httpauth import install_throttle, token_ok, unauthorized
from vmhealth.keys import same_secret
from vmhealth.process_counters import auth_failed

log = logging.getLogger(__name__)
MB = 1024 * 1024
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


class Exporter:
    """The exporter's moving parts: state, pollers, write-behind and report counters."""

    def __init__(self, config: SimpleNamespace):
        self.config = config
        self.store = GuestState(config.clusters, config.exporter.api_key, config.exporter.max_unknown_guests)
        self.db = GuestStateArchive(config.exporter.database_url)
        restored = self.db.load()
        self.store.load(restored)
        if restored:
            log.info("restored last-seen state of %d guests", len(restored))
        if not config.exporter.per_vm_keys:
            log.warning("exporter.per_vm_keys is false: the shared agent key is accepted, and any guest holding it "
                        "can report for any other (keep a hung neighbour looking alive); give guests their own keys "
                        "(`vmhealth agent-key`) and remove the setting")
        if not config.exporter.read_token and not is_loopback(config.exporter.listen):
            log.warning("the exporter listens on %s beyond loopback and /metrics, /api/vms and /api/status need no "
                        "credential: every guest can read the fleet; set exporter.read_token and give it to "
                        "Prometheus", config.exporter.listen)
        idle = self.db.load_idle()
        self.pollers = {c.name: ClusterPoller(c, self.store, config, self.db, idle.get(c.name))
                        for c in config.clusters}
        self.write_behind = WriteBehind(self.store, self.db, config.exporter.flush_interval)
        self.reports: Counter[str] = Counter()
        # values left out of stored heartbeats, by reason: disks_over_limit, label_rate
        self.dropped: Counter[str] = Counter()
        self.page = Page(config)
        self._reports_lock = threading.Lock()
        self.scheduler: BackgroundScheduler | None = None

    def count(self, result: str) -> None:
        with self._reports_lock:
            self.reports[result] += 1

    def count_dropped(self, numbers: dict[str, int]) -> None:
        """Values a stored heartbeat left out, by reason."""
        with self._reports_lock:
            self.dropped.update({reason: n for reason, n in numbers.items() if n})

    def poll_all(self) -> None:
        for poller in self.pollers.values():
            poller.poll()

    def start(self) -> None:
        """Start polling (first poll at once) and writing behind."""
        scheduler = BackgroundScheduler(daemon=True)
        for name, poller in self.pollers.items():
            scheduler.add_job(
                poller.poll, "interval", seconds=self.config.exporter.poll_interval, id=f"poll-{name}",
                max_instances=1, coalesce=True, misfire_grace_time=None, **poll_timing(self.config.exporter),
            )
        # /metrics formats changed guests every second, not all at once when Prometheus asks.
        scheduler.add_job(self.page.absorb, "interval", args=[self.store], seconds=1,
                          id="metrics-page", max_instances=1, coalesce=True)
        scheduler.start()
        self.scheduler = scheduler
        self.write_behind.start()
        log.info("exporter %s polling %d cluster(s) every %gs", __version__, len(self.pollers),
                 self.config.exporter.poll_interval)

    def stop(self) -> None:
        """Stop polling and write the last changes; safe to call more than once."""
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        self.write_behind.stop()
        self.db.close()


def poll_timing(exporter_cfg: SimpleNamespace) -> dict[str, datetime]:
    """When the polls run: from now on, or with `poll_offset` on the clock (unix time ≡ offset modulo the
    interval), so two replicas keep their stagger across restarts instead of drifting into step."""
    if exporter_cfg.poll_offset is None:
        return {"next_run_time": datetime.now(UTC)}
    return {"start_date": datetime.fromtimestamp(exporter_cfg.poll_offset, UTC)}


def _error(status: int, message: str, fields: dict[str, str] | None = None) -> tuple[Response, int]:
    body: dict[str, Any] = {"success": False, "error": message}
    if fields:
        body["fields"] = fields
    return jsonify(body), status


def _exporter() -> Exporter:
    return current_app.extensions["vmhealth_exporter"]


def create_app(config: SimpleNamespace | None = None, start: bool = True) -> Flask:
    """The WSGI app; with `start`, the pollers and the write-behind run in this process."""
    if config is None:
        from vmhealth.gunicorn_runner import load_from_environment

        config = load_from_environment("exporter")
    exporter = Exporter(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.exporter.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["vmhealth_exporter"] = exporter
    install_throttle(app, config.exporter.auth_failures_per_minute)
    _register_routes(app)
    app.wsgi_app = FastReports(  # type: ignore[method-assign]
        app.wsgi_app, lambda mimetype, key, read, address: _report(exporter, mimetype, key, read, address),
        config.exporter.max_body_bytes, app.json.dumps)
    if start:
        exporter.start()
    return app


def _reader(view: Callable[..., Any]) -> Callable[..., Any]:
    """With exporter.read_token set, the view answers only a request that carries it (bearer or basic)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _exporter().config.exporter.read_token
        if token and not token_ok(token):
            return unauthorized("read token", "vmhealth-exporter")
        return view(*args, **kwargs)

    return wrapper


def _register_routes(app: Flask) -> None:
    app.add_url_rule("/api/health/report", view_func=report, methods=["POST"])
    app.add_url_rule("/metrics", view_func=_reader(metrics))
    app.add_url_rule("/api/vms", view_func=_reader(list_vms))
    app.add_url_rule("/api/vms/<vmid>", view_func=_reader(get_vm))
    app.add_url_rule("/api/status", view_func=_reader(status))
    app.add_url_rule("/", view_func=landing)
    app.add_url_rule("/healthz", view_func=healthz)
    app.add_url_rule("/readyz", view_func=readyz)
    openapi.register(app)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc: RequestEntityTooLarge) -> tuple[Response, int]:
        if request.path == "/api/health/report":
            _exporter().count("too_large")
        return _error(413, f"body larger than {app.config['MAX_CONTENT_LENGTH']} bytes (exporter.max_body_bytes)")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return _error(exc.code or 500, exc.description or exc.name)


# --- ingest ---------------------------------------------------------------------------------

def report() -> tuple[Response, int]:
    status, reply = _report(_exporter(), request.mimetype, request.headers.get("X-API-Key"),
                            lambda: request.get_data(cache=False), request.remote_addr)
    return jsonify(reply), status


def _report(exporter: Exporter, mimetype: str, key: str | None, read_body: Callable[[], bytes],
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
    identity = None if shared else exporter.store.key_owner(key)
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
    refusal = exporter.store.admit(cluster, vmid)
    if refusal:
        return refusal[0], 404, refusal[1], None
    labels_dropped = exporter.store.record(cluster, vmid, parsed.heartbeat, parsed.disks_dropped)
    if parsed.disks_dropped or labels_dropped:
        exporter.count_dropped({"disks_over_limit": parsed.disks_dropped, "label_rate": labels_dropped})
    return "accepted", 200, f"Health report received for {parsed.heartbeat.hostname}", None


def _claimed_identity(exporter: Exporter, key: str, data: dict[str, Any]) -> GuestKey | None:
    """A guest Proxmox does not list (yet): the guest the report claims to be, if the key is its key."""
    claimed_vmid = data.get("vmid")
    if isinstance(claimed_vmid, str):
        claimed_vmid = vmid_text(claimed_vmid)
    if isinstance(claimed_vmid, int) and not isinstance(claimed_vmid, bool):
        clusters = [data["cluster"]] if isinstance(data.get("cluster"), str) else list(exporter.store.clusters)
        for cluster in clusters:
            if cluster in exporter.store.clusters and exporter.store.vm_key_matches(key, cluster, claimed_vmid):
                return cluster, claimed_vmid
    return None


def _resolve(exporter: Exporter, parsed: Report, identity: GuestKey | None) -> GuestKey | Refusal:
    """The (cluster, vmid) a report is for, or (result, status, message) when it cannot be told."""
    names = list(exporter.store.clusters)
    if parsed.cluster is not None and parsed.cluster not in exporter.store.clusters:
        return Refusal("invalid", 400, f"unknown cluster {parsed.cluster!r} (configured: {', '.join(names)})")
    vmid = parsed.vmid
    cluster = parsed.cluster
    if vmid is None and identity is not None:
        cluster, vmid = cluster or identity[0], identity[1]
    if vmid is None and parsed.uuid:
        found = exporter.store.vmid_for_uuid(parsed.uuid)
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
            listing = exporter.store.clusters_listing(vmid)
            if len(listing) != 1:
                where = f"in clusters {', '.join(listing)}" if listing else "in no configured cluster"
                return Refusal("invalid", 400, f"vmid {vmid} is {where}; send \"cluster\" in the report")
            cluster = listing[0]
    if parsed.uuid:
        owner = exporter.store.vmid_for_uuid(parsed.uuid, queue=False)
        if owner is not None and owner != (cluster, vmid):
            # whatever the key: a report never speaks for the guest whose UUID it borrows
            return Refusal("forbidden", 403, f"SMBIOS UUID {parsed.uuid} belongs to guest {owner[0]}/{owner[1]}, "
                           f"not to {cluster}/{vmid}")
    return cluster, vmid


# --- reading --------------------------------------------------------------------------------

def metrics() -> Response:
    exporter = _exporter()
    with exporter._reports_lock:
        reports, dropped = dict(exporter.reports), dict(exporter.dropped)
    body, headers = exporter.page.scrape(exporter.store, reports, request.headers.get("Accept-Encoding", ""),
                                         dropped)
    return Response(body, headers=headers, mimetype=None, content_type=CONTENT_TYPE)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _mb(value: int | None) -> float | None:
    return round(value / MB, 1) if value is not None else None


def _vm_rows(cluster_filter: str | None = None, vmid_filter: int | None = None) -> list[dict[str, Any]]:
    exporter = _exporter()
    config = exporter.config
    clusters, heartbeats = exporter.store.view()
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


def list_vms() -> Response:
    return jsonify(_vm_rows(cluster_filter=request.args.get("cluster") or None))


def get_vm(vmid: str) -> tuple[Response, int] | Response:
    number = vmid_text(vmid)
    if number is None:
        return _error(400, f"vmid must be a number, got {vmid[:40]!r}")
    rows = _vm_rows(cluster_filter=request.args.get("cluster") or None, vmid_filter=number)
    if not rows:
        return _error(404, f"no guest with vmid {vmid}")
    if len(rows) > 1:
        clusters = ", ".join(r["cluster"] for r in rows)
        return _error(409, f"vmid {vmid} exists in clusters {clusters}; add ?cluster=NAME")
    return jsonify(rows[0])


def status() -> Response:
    exporter = _exporter()
    rows = _vm_rows()
    counts = Counter(row["health"] for row in rows)
    clusters, _ = exporter.store.view()
    policy = exporter.config.webhook.policy
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
            "autoResetEnabled": bool(policy.enabled and not policy.dry_run),
        },
        "clusters": {
            name: {"up": s.up, "lastPoll": _iso(s.last_success) if s.last_success else None,
                   "error": s.last_error or None}
            for name, s in clusters.items()
        },
    })


LANDING = """<!doctype html><html><head><title>vmhealth exporter</title></head><body>
<h1>vmhealth exporter {version}</h1>
<ul>
<li><a href="/metrics">/metrics</a> &mdash; Prometheus series</li>
<li>POST /api/health/report &mdash; heartbeat ingest (X-API-Key)</li>
<li><a href="/api/vms">/api/vms</a>, /api/vms/&lt;vmid&gt; &mdash; guests and their health</li>
<li><a href="/api/status">/api/status</a> &mdash; counts and thresholds</li>
<li><a href="/healthz">/healthz</a> (alive), <a href="/readyz">/readyz</a> (every cluster polled once)</li>
<li><a href="/openapi.yaml">/openapi.yaml</a> &mdash; the OpenAPI document of this API</li>
</ul></body></html>
"""


def landing() -> Response:
    return Response(LANDING.format(version=__version__), mimetype="text/html")


def healthz() -> Response:
    return jsonify({"status": "ok"})


def readyz() -> tuple[Response, int]:
    """Open to anyone (load balancers, orchestrators), so it says only whether every cluster was polled once;
    which cluster is up is on /metrics (`vmhealth_pve_up`)."""
    clusters, _ = _exporter().store.view()
    if any(not s.polled_once for s in clusters.values()):
        return jsonify({"status": "waiting"}), 503
    return jsonify({"status": "ready"}), 200
