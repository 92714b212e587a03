"""The webhook's Flask application factory: database, policy, worker and blueprints, wired once."""

from __future__ import annotations

import atexit
import logging
import time
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from vmhealth import appcontext, openapi
from vmhealth.config import Config, WebhookConfig, is_loopback
from vmhealth.httpauth import install_throttle

from .context import WebhookContext
from .database import WebhookDatabase
from .metrics import WebhookMetrics
from .remediate import Remediator
from .worker import Worker, worker_id

MAX_BODY_BYTES = 4 * 1024 * 1024  # Alertmanager groups thousands of alerts in one message

log = logging.getLogger(__name__)


def _warn_open_reads(webhook: WebhookConfig) -> None:
    """One line each for what anyone who can reach the webhook may read without a token."""
    if webhook.public_history:
        log.warning("webhook.public_history is true: anyone who can reach %s reads the whole remediation history "
                    "(guest names, nodes, every refusal's detail) without a token", webhook.listen)
    if not webhook.metrics_token and not is_loopback(webhook.listen):
        log.warning("the webhook listens on %s beyond loopback and /metrics needs no token: set "
                    "webhook.metrics_token and give it to Prometheus", webhook.listen)


def create_app(config: Config | None = None, *, start_worker: bool = True, task_poll_interval: float = 1.0,
               settle: float = 5.0, worker_poll: float = 2.0) -> Flask:
    """The WSGI app. `config` None loads --config/$VMHEALTH_CONFIG and the environment (for gunicorn).

    The database is upgraded to the newest schema first, then the worker starts and takes up any
    events a previous process recorded but did not finish.
    """
    from vmhealth.db import make_engine, upgrade

    if config is None:
        from vmhealth.config import load_from_environment

        config = load_from_environment("webhook")
    engine = make_engine(config.webhook.database_url)
    upgrade(engine, "webhook")
    store = WebhookDatabase(engine)
    metrics = WebhookMetrics(cluster.name for cluster in config.clusters)
    remediator = Remediator(config.webhook, config.clusters, config.thresholds, store, metrics,
                            exporter_token=config.exporter.read_token, task_poll_interval=task_poll_interval,
                            settle=settle)
    if remediator.heartbeats.configured:
        log.info("before a reset, the guest's heartbeat age is read from %s: one within the stale timeout (%gs) "
                 "vetoes it", remediator.heartbeats.describe(), remediator.stale_timeout)
    else:
        log.warning("neither webhook.prometheus_url nor webhook.exporter_urls is set: an alert is trusted alone, "
                    "without checking the guest's heartbeat before a reset")
    _warn_open_reads(config.webhook)
    lease = float(config.webhook.claim_lease)
    size = int(config.webhook.policy.max_concurrent_actions)
    worker = Worker(store, remediator, size, lease, poll=worker_poll) if start_worker else None
    inline = Worker(store, remediator, 1, lease)
    ctx = WebhookContext(config, store, remediator, metrics, worker, inline.id, lease, inline)
    metrics.add_state(ctx.state)

    app = Flask("vmhealth.webhook")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    appcontext.install(app, ctx)
    install_throttle(app, config.webhook.auth_failures_per_minute)

    from . import alerts, api, console, console_session, guest_metrics, metrics_view

    app.register_blueprint(alerts.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(metrics_view.bp)
    app.register_blueprint(console.bp)
    app.register_blueprint(guest_metrics.bp)
    console_session.install(app, config.webhook)
    hops = int(config.webhook.proxy_hops)
    if hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_prefix=hops)  # type: ignore[method-assign]
    openapi.register(app)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        """JSON for every refusal Flask makes itself (404, 405, 413), like the API's own errors; a page
        in the console."""
        message = exc.description or exc.name
        if request.path.startswith("/ui/"):
            return render_template("console/message.html", title=exc.name, message=message,
                                   user=console_session.current()), exc.code or 500
        if exc.code == 413:
            message = f"body larger than {app.config['MAX_CONTENT_LENGTH']} bytes"
        return jsonify({"success": False, "error": message}), exc.code or 500

    @app.get("/")
    def index() -> tuple[Any, int]:
        return jsonify({"service": "vmhealth webhook", "endpoints": [
            "POST /alerts", "POST /api/vms/<vmid>/reset", "POST /api/vms/<vmid>/release",
            "POST /api/vms/<vmid>/close-incident", "POST /api/remediation/pause", "POST /api/remediation/resume",
            "GET /api/remediation", "GET /api/vms/<vmid>/reset-history", "GET /api/resets",
            "GET /api/vms/<vmid>/metrics", "GET /metrics", "GET /healthz", "GET /openapi.yaml",
            "GET /ui/ (the console)"]}), 200

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    if worker is not None:
        worker.start()
        atexit.register(worker.stop, 5.0)
    log.info("webhook ready at %s (worker %s, policy: %s)", time.strftime("%H:%M:%S"), worker_id(),
             "dry-run" if config.webhook.policy.dry_run else
             ("enabled" if config.webhook.policy.enabled else "disabled by the kill switch"))
    return app
