"""The console's login: a signed session cookie for the admin or the viewer token, and CSRF tokens.

The cookie is signed with a key derived from `webhook.admin_token`, so every replica accepts it and
a new admin token ends every session. It records which token logged in (as an HMAC, never the token),
so a changed viewer token ends the viewers' sessions too. It is HttpOnly, SameSite=Strict, Secure
when the request came over TLS, and expires `webhook.console_session` after the login, however busy
the session is. Every POST carries the session's CSRF token. The JSON API never reads this cookie:
a console login grants nothing outside /ui/.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from functools import wraps
from types import SimpleNamespace
from typing import Any

from flask import Flask, Request, current_app, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface

from vmhealth import appcontext
from vmhealth.config import WebhookConfig

from .context import WebhookContext

COOKIE = "vmhealth_console"
ROLES = ("viewer", "admin")
FAILED_LOGIN_DELAY = 1.0  # seconds a wrong token waits for its answer (more when its address keeps failing)
EXPIRED = "Your session has expired: log in again."


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure whenever the request itself came over TLS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(request and request.is_secure)


def install(app: Flask, webhook: WebhookConfig) -> None:
    lifetime = float(webhook.console_session)
    # no admin token, no admin login: a random key still signs the login form's CSRF token
    app.secret_key = signing_key(webhook.admin_token) if webhook.admin_token else secrets.token_hex(32)
    app.session_interface = _SessionInterface()
    app.config.update(SESSION_COOKIE_NAME=COOKIE, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                      PERMANENT_SESSION_LIFETIME=lifetime, SESSION_REFRESH_EACH_REQUEST=False)


def signing_key(admin_token: str) -> str:
    """The cookie's signing key: the same on every replica, another one after the admin token changed."""
    return hmac.new(admin_token.encode(), b"vmhealth console session", hashlib.sha256).hexdigest()


def token_tag(key: str, token: str) -> str:
    """Which token a session logged in with, without keeping the token."""
    return hmac.new(key.encode(), token.encode(), hashlib.sha256).hexdigest()[:32]


def _tag(token: str) -> str:
    return token_tag(current_app.secret_key, token)


def role_of(token: str) -> str | None:
    """"admin" or "viewer" for the matching token, compared in constant time; None for any other."""
    webhook = appcontext.get(WebhookContext).config.webhook
    given = token.strip().encode()
    found = None
    for role, expected in (("admin", webhook.admin_token), ("viewer", webhook.viewer_token)):
        if expected and hmac.compare_digest(given, expected.encode()):
            found = role
    return found


def log_in(role: str, who: str) -> None:
    webhook = appcontext.get(WebhookContext).config.webhook
    token = webhook.admin_token if role == "admin" else webhook.viewer_token
    session.clear()
    session.permanent = True
    session.update(role=role, who=who, tag=_tag(token), at=time.time(), csrf=secrets.token_urlsafe(24))


def csrf_token() -> str:
    """The session's CSRF token, made on first use (the login form has one before anyone logged in)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return str(session["csrf"])


def csrf_ok(req: Request) -> bool:
    expected = session.get("csrf")
    given = req.form.get("csrf", "")
    return bool(expected) and hmac.compare_digest(str(given).encode(), str(expected).encode())


def current() -> SimpleNamespace | None:
    """Who is logged in (role, who), or None: no session, an expired one, or one of a replaced token."""
    role = session.get("role")
    if role not in ROLES:
        return None
    webhook = appcontext.get(WebhookContext).config.webhook
    token = webhook.admin_token if role == "admin" else webhook.viewer_token
    at = session.get("at")
    if not token or not isinstance(at, (int, float)) or not hmac.compare_digest(str(session.get("tag", "")),
                                                                                  _tag(token)):
        return None
    if time.time() - at > float(webhook.console_session):
        return None
    return SimpleNamespace(role=role, who=str(session.get("who", role)), admin=role == "admin")


def login_required(admin: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Views for a logged-in person (`admin`: the admin token's); every POST also needs the CSRF token."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = current()
            if user is None:
                expired = "role" in session  # a login that ran out, or whose token was replaced
                if request.method == "GET":
                    return redirect(url_for("console.login", next=request.full_path.rstrip("?"),
                                            expired=1 if expired else None))
                return render_template("console/login.html", error=EXPIRED if expired else "Log in first.",
                                       next=""), 401
            if request.method == "POST" and not csrf_ok(request):
                return render_template("console/message.html", user=user, title="Refused",
                                       message="The form's CSRF token is missing or wrong: nothing was done. "
                                               "Reload the page and try again."), 400
            if admin and not user.admin:
                return render_template("console/message.html", user=user, title="Not allowed",
                                       message="You logged in with the viewer token: it shows everything and "
                                               "changes nothing. Log in with the admin token to act."), 403
            return view(user, *args, **kwargs)

        return wrapper

    return decorate
