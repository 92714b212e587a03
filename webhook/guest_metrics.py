"""`GET /api/vms/<vmid>/metrics?hours=N`: the original dashboard's metrics of one guest, from Prometheus.

The answer keeps the original shape, a list of {timestamp, cpuUsage (%), ramUsage (MiB), ramTotal
(MiB), uptime (s)}, one point per step, read from the series the exporter already serves, so nothing
is stored twice. It needs `webhook.prometheus_url` and the viewer or the admin token.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, jsonify, request

from vmhealth import appcontext

from .api import MAX_VMID, configured_cluster
from .auth import require_reader
from .context import WebhookContext
from .prometheus_api import PrometheusAPI, PrometheusError

bp = Blueprint("guest_metrics", __name__, url_prefix="/api")
MAX_HOURS = 24 * 31
POINTS = 288  # one every 5 minutes over a day

SERIES = {
    "cpuUsage": "100 * cluster_vmid:vmhealth_guest_cpu_usage:ratio{sel}",
    "ramUsage": "max(last_over_time(vmhealth_guest_memory_used_bytes{sel}[5m])) / 1048576",
    "ramTotal": "max(last_over_time(vmhealth_guest_memory_total_bytes{sel}[5m])) / 1048576",
    "uptime": "max(last_over_time(vmhealth_guest_uptime_seconds{sel}[5m]))",
}


@bp.get(f"/vms/<int(min=1, max={MAX_VMID}):vmid>/metrics")
@require_reader
def guest_metrics(vmid: int) -> tuple[Any, int]:
    url = appcontext.get(WebhookContext).config.webhook.prometheus_url
    if not url:
        return jsonify({"error": "webhook.prometheus_url is not set: the metrics are read from Prometheus"}), 503
    text = request.args.get("hours", "24").strip()
    try:
        hours = float(text)
        if not 0 < hours <= MAX_HOURS:
            raise ValueError
    except ValueError:
        return jsonify({"error": f"hours: expected a number of hours above 0 and at most {MAX_HOURS}, "
                                 f"got {text[:40]!r}"}), 400
    cluster, problem = configured_cluster(vmid)
    if problem:
        return problem
    end = time.time()
    step = max(hours * 3600 / POINTS, 15.0)
    prometheus = PrometheusAPI(url)
    points: dict[float, dict[str, Any]] = {}
    sel = f'{{cluster="{cluster}",vmid="{vmid}"}}'
    try:
        for key, template in SERIES.items():
            for series in prometheus.range(template.format(sel=sel), end - hours * 3600, end, step)[:1]:
                for t, v in series.get("values", []):
                    point = points.setdefault(float(t), {"timestamp": _iso(float(t)), "cpuUsage": None,
                                                         "ramUsage": None, "ramTotal": None, "uptime": None})
                    point[key] = round(float(v), 2)
    except PrometheusError as exc:
        return jsonify({"error": f"Prometheus did not answer: {exc}"}), 502
    return jsonify([points[t] for t in sorted(points)]), 200


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
