"""GET /metrics: the webhook's own series, for Prometheus (job `vmhealth-webhook`)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    ctx = current_app.extensions["vmhealth"]
    return Response(generate_latest(ctx.metrics.registry), mimetype=CONTENT_TYPE_LATEST)
