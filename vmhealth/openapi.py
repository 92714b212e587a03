"""The OpenAPI document of the exporter's and the webhook's HTTP APIs, served by both at /openapi.yaml.

The one copy ships inside the package (docs/openapi.yaml links to it), so an installed vmhealth
serves the same document the repository shows.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from flask import Flask, Response

MEDIA_TYPE = "application/yaml"


@cache
def document() -> bytes:
    """The document's bytes, read once from the package."""
    return files("vmhealth").joinpath("openapi.yaml").read_bytes()


def serve_document() -> Response:
    return Response(document(), mimetype=MEDIA_TYPE)


def register(app: Flask) -> None:
    """Add GET /openapi.yaml to `app`."""
    app.add_url_rule("/openapi.yaml", endpoint="openapi", view_func=serve_document, methods=["GET"])
