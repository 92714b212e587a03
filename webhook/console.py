"""The operator console under /ui/: what vmhealth sees, what it did and why, and the buttons.

Server-rendered pages (Jinja), charts drawn as SVG on the server, no JavaScript. Guest state comes
from Prometheus (`webhook.prometheus_url`), the remediation side from the database. Every action
asks for confirmation on a page of its own, goes through the same code as the admin API, and lands
in the history with `actor=manual:<who>`.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from sqlalchemy.exc import SQLAlchemyError

from vmhealth import appcontext
from vmhealth.httpauth import failed
from vmhealth.textformat import utf8_text

from . import console_session, fleet_view, pauses, remediation_view
from .api import MAX_VMID, action_json, manual_reset, parse_since, set_pause
from .console_session import csrf_ok, csrf_token, login_required
from .context import WebhookContext
from .prometheus_api import PrometheusAPI, PrometheusError
from .sparkline import sparkline

bp = Blueprint("console", __name__, url_prefix="/ui", template_folder="templates", static_folder="static",
               static_url_path="/static")
PAGE_SIZE = 50
_WHO = re.compile(r"^[\w .@+-]{1,64}$")


def _clusters() -> list[str]:
    return [c.name for c in appcontext.get(WebhookContext).config.clusters]


def _prometheus() -> PrometheusAPI | None:
    url = appcontext.get(WebhookContext).config.webhook.prometheus_url
    return PrometheusAPI(url) if url else None


@bp.app_template_filter("when")
def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.app_template_filter("ago")
def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    delta = time.time() - seconds
    future = delta < 0
    delta = abs(delta)
    text = (f"{delta:.0f}s" if delta < 90 else f"{delta / 60:.0f}m" if delta < 5400
            else f"{delta / 3600:.1f}h" if delta < 172800 else f"{delta / 86400:.0f}d")
    return f"in {text}" if future else f"{text} ago"


@bp.app_template_filter("age")
def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return f"{seconds:.0f}s" if seconds < 90 else f"{seconds / 60:.0f}m" if seconds < 5400 else f"{seconds / 3600:.1f}h"


@bp.context_processor
def _common() -> dict[str, Any]:
    """What every page shows: who is logged in, the pauses in force, the CSRF token for its forms."""
    config = appcontext.get(WebhookContext).config
    try:
        active = pauses.active(appcontext.get(WebhookContext).store)
    except SQLAlchemyError:
        active = []
    return {"user": console_session.current(), "pauses": active, "csrf_token": csrf_token,
            "policy": config.webhook.policy, "grafana_url": (config.webhook.grafana_url or "").rstrip("/"),
            "prometheus_configured": bool(config.webhook.prometheus_url), "clusters": _clusters(),
            "describe_scope": pauses.describe}


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", "default-src 'self'; style-src 'self'; img-src 'self' "
                                "data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


# --- login -----------------------------------------------------------------------------------------
def _safe_next(value: str | None) -> str:
    """A page of the console to return to after logging in; anything else goes to the Now page."""
    if value and value.startswith("/ui/") and "//" not in value and "\\" not in value:
        return value
    return ""


@bp.get("/login")
def login() -> Any:
    expired = console_session.EXPIRED if request.args.get("expired") else ""
    return render_template("console/login.html", next=_safe_next(request.args.get("next")), error=expired)


@bp.post("/login")
def login_post() -> Any:
    target = _safe_next(request.form.get("next"))
    if not csrf_ok(request):
        return render_template("console/login.html", error="The login form expired: try again.", next=target), 400
    token, who = request.form.get("token", ""), request.form.get("who", "").strip()
    role = console_session.role_of(token) if token else None
    if role is None:
        # counted, and slowed down (then 429) for an address that keeps failing; the right token never is
        retry_after = failed("console login", "POST /ui/login", "wrong" if token else "missing")
        if retry_after:
            return render_template("console/login.html", next=target,
                                   error=f"Too many failed logins from your address: try again in {retry_after}s."
                                   ), 429, {"Retry-After": str(retry_after)}
        time.sleep(console_session.FAILED_LOGIN_DELAY)
        return render_template("console/login.html", next=target,
                               error="That token is neither the admin token nor the viewer token."), 401
    if who and not _WHO.match(who):
        return render_template("console/login.html", next=target,
                               error="Your name: up to 64 letters, digits, spaces and . @ + - _"), 400
    console_session.log_in(role, who or role)
    return redirect(request.script_root + target if target else url_for("console.now"))


@bp.post("/logout")
def logout() -> Any:
    if not csrf_ok(request):
        return render_template("console/login.html", error="The form expired: log out from a page you reload.",
                               next=""), 400
    console_session.session.clear()
    flash("You are logged out.", "ok")
    return redirect(url_for("console.login"))


# --- pages -------------------------------------------------------------------------------------------
def _guest_views(cluster: str | None = None, vmid: int | None = None) -> tuple[dict[Any, Any], str]:
    prometheus = _prometheus()
    if prometheus is None:
        return {}, ""
    try:
        return fleet_view.guests(prometheus, _clusters(), cluster, vmid), ""
    except PrometheusError as exc:
        return {}, str(exc)


@bp.get("/")
@login_required()
def now(user: Any) -> Any:
    ctx = appcontext.get(WebhookContext)
    views, prometheus_error = _guest_views()
    return render_template("console/now.html", fleet=fleet_view.by_state(views.values()), states=fleet_view.STATES,
                           prometheus_error=prometheus_error, incidents=remediation_view.incidents(ctx.store),
                           quarantines=remediation_view.quarantines(ctx.store),
                           brakes=remediation_view.brakes(ctx), views=views,
                           rows=[action_json(r) for r in ctx.store.history.rows(
                               outcome="skipped", since=time.time() - 3600, limit=10)])


@bp.get("/history")
@login_required()
def history(user: Any) -> Any:
    args = request.args
    filters = {k: args.get(k, "").strip() for k in ("cluster", "vmid", "outcome", "since", "until")}
    try:
        vmid = int(filters["vmid"]) if filters["vmid"] else None
        if vmid is not None and not 1 <= vmid <= MAX_VMID:
            raise ValueError(f"vmid: must be from 1 to {MAX_VMID}")
        since, until = parse_since(filters["since"] or None), parse_since(filters["until"] or None)
        before = int(args["before"]) if args.get("before") else None
    except ValueError as exc:
        message = str(exc) if ":" in str(exc) else f"vmid: must be a whole number, got {filters['vmid'][:40]!r}"
        return render_template("console/history.html", rows=[], filters=filters, error=message, following=None), 400
    rows = appcontext.get(WebhookContext).store.history.rows(cluster=filters["cluster"] or None, vmid=vmid, since=since,
                                                 until=until, outcome=filters["outcome"] or None, limit=PAGE_SIZE,
                                                 before_id=before)
    following = rows[-1].id if len(rows) == PAGE_SIZE else None
    return render_template("console/history.html", rows=[action_json(r) for r in rows], filters=filters,
                           error="", following=following, before=before)


def _configured(cluster: str) -> None:
    if cluster not in _clusters():
        abort(404, f"cluster {cluster!r} is not configured")


@bp.get(f"/guests/<cluster>/<int(min=1, max={MAX_VMID}):vmid>")
@login_required()
def guest(user: Any, cluster: str, vmid: int) -> Any:
    _configured(cluster)
    ctx = appcontext.get(WebhookContext)
    views, prometheus_error = _guest_views(cluster, vmid)
    charts: list[Any] = []
    prometheus = _prometheus()
    end = time.time()
    if prometheus is not None and not prometheus_error:
        try:
            for chart in fleet_view.charts(prometheus, cluster, vmid, now=end):
                charts.append((chart, sparkline(chart.points, end - 86400, end, 2 * 86400 / fleet_view.CHART_POINTS)))
        except PrometheusError as exc:
            prometheus_error = str(exc)
    quarantine = ctx.store.incidents.quarantined(cluster, vmid)
    return render_template("console/guest.html", cluster=cluster, vmid=vmid, view=views.get((cluster, vmid)),
                           prometheus_error=prometheus_error, charts=charts, quarantine=quarantine,
                           incidents=remediation_view.incidents(ctx.store, cluster, vmid, open_only=False, limit=20),
                           rows=[action_json(r) for r in ctx.store.history.rows(cluster=cluster, vmid=vmid, limit=50)])


# --- actions -------------------------------------------------------------------------------------------
def _reason(required: bool, default: str) -> str | None:
    reason = request.form.get("reason", "").strip()
    if not reason:
        return None if required else default
    return reason if len(reason) <= 1000 and utf8_text(reason) else None


def _confirm(title: str, summary: str, fields: dict[str, str], back: str) -> Any:
    return render_template("console/confirm.html", title=title, summary=summary, fields=fields, back=back,
                           action=request.path)


def _done(answer: dict[str, Any], back: str) -> Any:
    flash(answer.get("message") or answer.get("error") or "done", "ok" if answer.get("success") else "error")
    return redirect(back, code=303)


@bp.post(f"/guests/<cluster>/<int(min=1, max={MAX_VMID}):vmid>/reset")
@login_required(admin=True)
def reset(user: Any, cluster: str, vmid: int) -> Any:
    _configured(cluster)
    back = url_for("console.guest", cluster=cluster, vmid=vmid)
    reason = _reason(False, "Manual reset from the console")
    if reason is None:
        flash("Reason: at most 1000 characters of text.", "error")
        return redirect(back, code=303)
    force = request.form.get("force") == "1"
    if request.form.get("confirmed") != "1":
        lifted = ", lifting the attempt limit and any quarantine (force)" if force else ""
        summary = f"Reset guest {vmid} of cluster {cluster} through the whole policy{lifted}. Reason: {reason}"
        return _confirm("Reset this guest?", summary, {"reason": reason, "force": "1" if force else ""}, back)
    answer, _ = manual_reset(appcontext.get(WebhookContext), cluster, vmid, user.who, reason, force)
    return _done(answer, back)


@bp.post(f"/guests/<cluster>/<int(min=1, max={MAX_VMID}):vmid>/release")
@login_required(admin=True)
def release(user: Any, cluster: str, vmid: int) -> Any:
    _configured(cluster)
    back = url_for("console.guest", cluster=cluster, vmid=vmid)
    if request.form.get("back") == "now":
        back = url_for("console.now")
    if request.form.get("confirmed") != "1":
        return _confirm("End this quarantine?", f"Release guest {vmid} of cluster {cluster}: its attempts start "
                        "again at zero and the next alert may reset it.", {"back": request.form.get("back", "")},
                        back)
    if appcontext.get(WebhookContext).store.incidents.release(cluster, vmid, f"manual:{user.who}", time.time()):
        return _done({"success": True, "message": f"Released {cluster}/{vmid}: attempts start again at zero"}, back)
    return _done({"success": False, "error": f"{cluster}/{vmid} is not quarantined"}, back)


def _scope() -> str:
    scope = request.form.get("scope", pauses.FLEET)
    if scope != pauses.FLEET and scope not in _clusters():
        abort(400, f"scope: {scope[:80]!r} is neither '*' nor a configured cluster")
    return scope


@bp.post("/pause")
@login_required(admin=True)
def pause(user: Any) -> Any:
    scope, back = _scope(), url_for("console.now")
    reason = _reason(True, "")
    if reason is None:
        flash("A pause needs a reason (at most 1000 characters): the history and the alert show it.", "error")
        return redirect(back, code=303)
    if request.form.get("confirmed") != "1":
        return _confirm("Pause automatic remediation?",
                        f"Alerts about {pauses.describe(scope)} will be recorded and refused as "
                        f"skipped:remediation-paused until someone resumes. Reason: {reason}",
                        {"scope": scope, "reason": reason}, back)
    answer, _ = set_pause(appcontext.get(WebhookContext), scope, user.who, reason, True)
    return _done(answer, back)


@bp.post("/resume")
@login_required(admin=True)
def resume(user: Any) -> Any:
    scope, back = _scope(), url_for("console.now")
    reason = _reason(False, "resumed from the console") or "resumed from the console"
    if request.form.get("confirmed") != "1":
        return _confirm("Resume automatic remediation?",
                        f"Hung guests of {pauses.describe(scope)} will be reset again at their alert's next repeat.",
                        {"scope": scope, "reason": reason}, back)
    answer, _ = set_pause(appcontext.get(WebhookContext), scope, user.who, reason, False)
    return _done(answer, back)
