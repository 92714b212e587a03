"""POST /alerts: Alertmanager's webhook. Authenticate, record every alert durably, reply, wake the worker.

Nothing here touches Proxmox, so no reply is ever a 5xx after a guest was touched; a 503 means the
database could not record the notification and Alertmanager should send it again.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from vmhealth import appcontext, safejson

from .auth import bearer_ok, refused
from .context import WebhookContext
from .payload import PayloadError, parse_notification

log = logging.getLogger(__name__)
bp = Blueprint("alerts", __name__)


@bp.post("/alerts")
def receive() -> tuple[object, int]:
    ctx = appcontext.get(WebhookContext)
    config = appcontext.get(WebhookContext).config
    if not bearer_ok(config.webhook.token):
        refused("Alertmanager token")
        ctx.metrics.notification("unknown", "unauthorized")
        return jsonify({"error": "missing or wrong bearer token"}), 401
    body = safejson.request_json(request)
    if body is None:
        ctx.metrics.notification("unknown", "invalid")
        return jsonify({"error": "body: expected a JSON object (Content-Type: application/json)"}), 400
    clusters = [c.name for c in config.clusters]
    try:
        notification = parse_notification(body, clusters[0] if len(clusters) == 1 else None)
    except PayloadError as exc:
        status = body.get("status") if isinstance(body, dict) else None
        ctx.metrics.notification(status if status in ("firing", "resolved") else "unknown", "invalid")
        return jsonify({"error": str(exc)}), 400
    if notification.truncated:
        log.warning("receiver %s: Alertmanager left out %d alert(s) of group %s (max_alerts); they arrive "
                    "with a later notification", notification.receiver, notification.truncated,
                    notification.group_key)
    try:
        recorded = ctx.store.queue.record(notification.alerts, time.time())
    except SQLAlchemyError as exc:
        log.error("cannot record a notification, replying 503 so Alertmanager retries: %s",
                  str(exc).splitlines()[0])
        ctx.metrics.notification(notification.status, "unavailable")
        return jsonify({"error": "the database is unavailable; retry later"}), 503
    for alert, item in zip(notification.alerts, recorded, strict=True):
        ctx.metrics.notification(alert.status, item.result)
    if any(item.result in ("recorded", "rearmed") for item in recorded) and ctx.worker is not None:
        ctx.worker.wake()
    return jsonify({"status": "recorded", "alerts": [
        {"fingerprint": a.fingerprint, "status": a.status, "result": r.result}
        for a, r in zip(notification.alerts, recorded, strict=True)]}), 200
