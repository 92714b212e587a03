"""GET /metrics: the Prometheus page of every guest and cluster, and the exporter's own counters."""

from __future__ import annotations

from flask import Blueprint, Response, request

from vmhealth import appcontext

from .auth import require_reader
from .exposition import CONTENT_TYPE
from .service import Exporter

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@require_reader
def metrics() -> Response:
    exporter = appcontext.get(Exporter)
    reports, dropped = exporter.counters()
    body, headers = exporter.page.scrape(exporter.guests, reports, request.headers.get("Accept-Encoding", ""),
                                         dropped)
    return Response(body, headers=headers, mimetype=None, content_type=CONTENT_TYPE)
