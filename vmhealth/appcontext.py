"""How a vmhealth Flask app holds what its views share, and how a view reaches it.

Each app has one context object (the exporter's `Exporter`, the webhook's `WebhookContext`) that holds
its configuration and its moving parts. The factory `install`s it; a view asks for it with
`appcontext.get(Kind)`, which also tells the type checker what it gets.
"""

from __future__ import annotations

from typing import Any, TypeVar

from flask import Flask, current_app

EXTENSION = "vmhealth"
Context = TypeVar("Context")


def install(app: Flask, context: object) -> None:
    app.extensions[EXTENSION] = context


def get(kind: type[Context]) -> Context:
    """The running app's context object, inside a request."""
    context = current_app.extensions[EXTENSION]
    if not isinstance(context, kind):
        raise TypeError(f"this app's context is a {type(context).__name__}, not a {kind.__name__}")
    return context


def of(app: Flask) -> Any:
    """An app's context object outside a request (gunicorn's hooks); None before `install`."""
    return app.extensions.get(EXTENSION)
