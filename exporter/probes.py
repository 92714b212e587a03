"""GET /healthz (the process answers) and /readyz (every cluster was polled once): open to anyone."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from vmhealth import appcontext

from .service import Exporter

bp = Blueprint("probes", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Open to anyone (load balancers, orchestrators), so it says only whether every cluster was polled once;
    which cluster is up is on /metrics (`vmhealth_pve_up`)."""
    clusters, _ = appcontext.get(Exporter).guests.view()
    if any(not s.polled_once for s in clusters.values()):
        return jsonify({"status": "waiting"}), 503
    return jsonify({"status": "ready"}), 200
