"""The exporter's Flask application factory: its service and blueprints, wired once."""

from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from vmhealth import __version__, appcontext, openapi
from vmhealth.config import Config
from vmhealth.httpauth import install_throttle

from . import api, ingest_view, metrics_view, probes
from .ingest import REPORT_PATH, FastReports
from .service import Exporter

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


def create_app(config: Config | None = None, start: bool = True) -> Flask:
    """The WSGI app; with `start`, the pollers and the write-behind run in this process."""
    if config is None:
        from vmhealth.config import load_from_environment

        config = load_from_environment("exporter")
    exporter = Exporter(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.exporter.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    appcontext.install(app, exporter)
    install_throttle(app, config.exporter.auth_failures_per_minute)
    for blueprint in (ingest_view.bp, metrics_view.bp, api.bp, probes.bp):
        app.register_blueprint(blueprint)
    openapi.register(app)

    @app.get("/")
    def landing() -> Response:
        return Response(LANDING.format(version=__version__), mimetype="text/html")

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc: RequestEntityTooLarge) -> tuple[Response, int]:
        if request.path == REPORT_PATH:
            exporter.count("too_large")
        return api.error(413, f"body larger than {app.config['MAX_CONTENT_LENGTH']} bytes (exporter.max_body_bytes)")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return api.error(exc.code or 500, exc.description or exc.name)

    app.wsgi_app = FastReports(  # type: ignore[method-assign]
        app.wsgi_app, lambda mimetype, key, read, address: ingest_view.handle_report(exporter, mimetype, key, read,
                                                                                     address),
        config.exporter.max_body_bytes, app.json.dumps)
    if start:
        exporter.start()
    return app
