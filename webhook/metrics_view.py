"""GET /metrics: the webhook's own series, for Prometheus (job `vmhealth-webhook`); with
webhook.metrics_token set, only for that bearer token (or the viewer's or admin's)."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vmhealth import appcontext

from .auth import require_metrics
from .context import WebhookContext

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@require_metrics
def metrics() -> Response:
    ctx = appcontext.get(WebhookContext)
    return Response(generate_latest(ctx.metrics.registry), mimetype=CONTENT_TYPE_LATEST)
