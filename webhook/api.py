"""The manual API: reset and release a guest, close its incident (admin token), read the remediation history.

A manual reset is recorded as an alert event of its own (actor `manual:<who>`) and decided inline by
the same code as an alert's, so the whole policy applies; `force` lifts only the attempt limit and
the quarantine, and is written into the history.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from vmhealth import appcontext, safejson
from vmhealth.durations import parse_duration
from vmhealth.models.webhook import Action
from vmhealth.textformat import utf8_text

from . import pauses
from .auth import require_admin, require_history, require_reader
from .context import WebhookContext
from .payload import Alert

bp = Blueprint("api", __name__, url_prefix="/api")
log = logging.getLogger(__name__)
MAX_LIMIT = 1000
MAX_VMID = 999_999_999  # larger ids are no guest of Proxmox's (and overflow SQLite's integers)


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def action_json(row: Action) -> dict[str, Any]:
    return {
        "id": row.id, "time": _iso(row.at), "cluster": row.cluster, "node": row.node, "vmid": row.vmid,
        "name": row.name, "fingerprint": row.fingerprint, "incident": row.incident_id, "attempt": row.attempt,
        "action": row.action, "outcome": row.outcome, "upid": row.upid, "exitstatus": row.exitstatus,
        "error": row.error, "actor": row.actor, "reason": row.reason, "forced": bool(row.forced),
        "evidence": evidence_json(row.evidence),
    }


def evidence_json(text: str | None) -> dict[str, Any]:
    """A row's evidence as an object: {} when it has none (rows older than the evidence, resolved ones)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def configured_cluster(vmid: int) -> tuple[str | None, tuple[Any, int] | None]:
    names = [c.name for c in appcontext.get(WebhookContext).config.clusters]
    wanted = request.args.get("cluster")
    if wanted:
        if wanted not in names:
            return None, (jsonify({"success": False, "error": f"cluster: {wanted!r} is not configured"}), 400)
        return wanted, None
    if len(names) == 1:
        return names[0], None
    return None, (jsonify({"success": False, "error": f"cluster: several clusters are configured, "
                                                      f"add ?cluster= (one of {', '.join(names)})"}), 400)


def _manual_body() -> tuple[dict[str, Any], str, tuple[Any, int] | None]:
    """A manual request's JSON object (empty when there is no body) and its `actor`, who asked
    (`manual:<who>` in the history); or the 400 that names what is wrong."""
    body = safejson.request_json(request) if request.data else {}
    if not isinstance(body, dict):
        return {}, "", (jsonify({"success": False, "error": "body: expected a JSON object"}), 400)
    who = body.get("actor", "admin")
    if not isinstance(who, str) or not who or len(who) > 200 or not utf8_text(who):
        return body, "", (jsonify({"success": False, "error": "actor: expected a short non-empty string"}), 400)
    return body, who, None


@bp.post(f"/vms/<int(min=1, max={MAX_VMID}):vmid>/reset")
@require_admin
def reset(vmid: int) -> tuple[Any, int]:
    body, who, problem = _manual_body()
    if problem:
        return problem
    reason, force = body.get("reason", "Manual reset"), body.get("force", False)
    if not isinstance(reason, str) or len(reason) > 1000 or not utf8_text(reason):
        return jsonify({"success": False, "error": "reason: expected a string of at most 1000 characters"}), 400
    if not isinstance(force, bool):
        return jsonify({"success": False, "error": "force: expected true or false"}), 400
    cluster, problem = configured_cluster(vmid)
    if problem:
        return problem
    answer, status = manual_reset(appcontext.get(WebhookContext), cluster, vmid, who, reason, force)
    return jsonify(answer), status


def manual_reset(ctx: Any, cluster: str, vmid: int, who: str, reason: str, force: bool) -> tuple[dict[str, Any], int]:
    """A person's reset, decided inline through the whole policy: the answer and its HTTP status.

    The API and the console both ask through here, so both keep the same checks and `force` semantics."""
    now = time.time()
    event = Alert(
        fingerprint=f"manual:{uuid.uuid4().hex}", starts_at=_iso(now) or "", status="firing", alertname="manual",
        labels={}, cluster=cluster, vmid=vmid, node="", name="", action="reset")
    try:
        [recorded] = ctx.store.queue.record([event], now, actor=f"manual:{who}", reason=reason, force=force)
        if not ctx.store.queue.claim_event(recorded.event_id, ctx.worker_id, now, ctx.lease):
            return {"success": False, "error": "the request was taken by a worker; see the history"}, 202
    except SQLAlchemyError:
        return {"success": False, "error": "the database is unavailable; nothing was done"}, 503
    decision = ctx.run_inline(recorded.event_id)
    if decision is None:
        return {"success": False, "error": "the decision failed; it is retried, see the history"}, 202
    if decision.outcome == "success":
        return {"success": True, "message": f"Reset command sent to {decision.name or vmid}",
                "resetAttempts": decision.attempts}, 200
    if decision.outcome == "dry-run":
        return {"success": True, "message": f"Dry run: {decision.detail}", "dryRun": True,
                "resetAttempts": decision.attempts}, 200
    status = 409 if decision.outcome.startswith("skipped:") else 200
    if decision.outcome == "skipped:not-found":
        status = 404
    return {"success": False, "error": f"{decision.outcome}: {decision.detail}", "outcome": decision.outcome,
            "resetAttempts": decision.attempts}, status


@bp.post(f"/vms/<int(min=1, max={MAX_VMID}):vmid>/release")
@require_admin
def release(vmid: int) -> tuple[Any, int]:
    ctx = appcontext.get(WebhookContext)
    cluster, problem = configured_cluster(vmid)
    if problem:
        return problem
    _, who, problem = _manual_body()
    if problem:
        return problem
    if ctx.store.incidents.release(cluster, vmid, f"manual:{who}", time.time()):
        return jsonify({"success": True, "message": f"Released {cluster}/{vmid}: attempts start again at zero"}), 200
    return jsonify({"success": False, "error": f"{cluster}/{vmid} is not quarantined"}), 404


@bp.post(f"/vms/<int(min=1, max={MAX_VMID}):vmid>/close-incident")
@require_admin
def close_incident(vmid: int) -> tuple[Any, int]:
    """End the guest's open incident without a resolved notification (an alert that will never resolve)."""
    ctx = appcontext.get(WebhookContext)
    cluster, problem = configured_cluster(vmid)
    if problem:
        return problem
    body, who, problem = _manual_body()
    if problem:
        return problem
    reason = body.get("reason", "closed by a person")
    if not isinstance(reason, str) or not reason or len(reason) > 1000 or not utf8_text(reason):
        return jsonify({"success": False, "error": "reason: expected a non-empty string of at most 1000 "
                                                   "characters"}), 400
    try:
        closed = ctx.store.incidents.close(cluster, vmid, time.time(), "closed:manual", f"manual:{who}",
                                           f"manual: {reason}")
    except SQLAlchemyError:
        return jsonify({"success": False, "error": "the database is unavailable; nothing was done"}), 503
    if closed is None:
        return jsonify({"success": False, "error": f"{cluster}/{vmid} has no open incident"}), 404
    return jsonify({"success": True, "message": f"Closed incident {closed} of {cluster}/{vmid}",
                    "incident": closed}), 200


def _pause_scope(body: dict[str, Any]) -> tuple[str, tuple[Any, int] | None]:
    """The body's `cluster` (a configured one) or the whole fleet when it has none (null is no cluster's name)."""
    if "cluster" not in body:
        return pauses.FLEET, None
    cluster = body["cluster"]
    names = [c.name for c in appcontext.get(WebhookContext).config.clusters]
    if not isinstance(cluster, str) or cluster not in names:
        return "", (jsonify({"success": False, "error": f"cluster: {str(cluster)[:80]!r} is not configured "
                                                        f"(one of {', '.join(names)}), or leave it out for all"}), 400)
    return cluster, None


@bp.post("/remediation/pause")
@require_admin
def pause() -> tuple[Any, int]:
    """Pause automatic remediation of the fleet, or of one `cluster`, until resumed; `reason` is required."""
    return _pause_request(True)


@bp.post("/remediation/resume")
@require_admin
def resume() -> tuple[Any, int]:
    return _pause_request(False)


def _pause_request(paused: bool) -> tuple[Any, int]:
    body, who, problem = _manual_body()
    if problem:
        return problem
    scope, problem = _pause_scope(body)
    if problem:
        return problem
    reason = body.get("reason", None if paused else "resumed")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 1000 or not utf8_text(reason):
        return jsonify({"success": False, "error": "reason: expected a non-empty string of at most 1000 "
                                                   "characters"}), 400
    answer, status = set_pause(appcontext.get(WebhookContext), scope, who, reason, paused)
    return jsonify(answer), status


@bp.get("/remediation")
@require_reader
def remediation_state() -> tuple[Any, int]:
    """The brakes in force: kill switch, dry-run and the runtime pauses."""
    ctx = appcontext.get(WebhookContext)
    limits = ctx.config.webhook.policy
    try:
        active = pauses.active(ctx.store)
    except SQLAlchemyError:
        return jsonify({"error": "the database is unavailable"}), 503
    return jsonify({"enabled": bool(limits.enabled), "dryRun": bool(limits.dry_run), "paused": [
        {"scope": p.scope, "since": _iso(p.since), "actor": p.actor, "reason": p.reason} for p in active]}), 200


def set_pause(ctx: Any, scope: str, who: str, reason: str, paused: bool) -> tuple[dict[str, Any], int]:
    """Pause or resume `scope` (pauses.FLEET or a cluster) for `manual:<who>`: the answer and its HTTP status."""
    actor, what = f"manual:{who}", pauses.describe(scope)
    try:
        if paused:
            changed = pauses.pause(ctx.store, scope, actor, reason, time.time())
        else:
            changed = pauses.resume(ctx.store, scope, actor, reason, time.time()) is not None
    except SQLAlchemyError:
        return {"success": False, "error": "the database is unavailable; nothing was changed"}, 503
    if not changed:
        state = "already paused" if paused else "not paused"
        return {"success": False, "error": f"automatic remediation of {what} is {state}"}, 409
    if paused:
        log.warning("automatic remediation of %s paused by %s: %s", what, actor, reason)
        return {"success": True, "message": f"Automatic remediation of {what} paused"}, 200
    log.warning("automatic remediation of %s resumed by %s: %s", what, actor, reason)
    return {"success": True, "message": f"Automatic remediation of {what} resumed"}, 200


@bp.get(f"/vms/<int(min=1, max={MAX_VMID}):vmid>/reset-history")
@require_history
def reset_history(vmid: int) -> tuple[Any, int]:
    """The original's shape: a list of {timestamp, reason, success}, plus the details vmhealth keeps."""
    ctx = appcontext.get(WebhookContext)
    rows = ctx.store.history.rows(cluster=request.args.get("cluster"), vmid=vmid, limit=MAX_LIMIT)
    out = []
    for row in rows:
        item = action_json(row)
        item.update(timestamp=item["time"], reason=row.reason or row.error or row.outcome,
                    success=row.outcome == "success")
        out.append(item)
    return jsonify(out), 200


@bp.get("/resets")
@require_history
def resets() -> tuple[Any, int]:
    """Paginated history, newest first: `next` is the `before` of the following page."""
    ctx = appcontext.get(WebhookContext)
    args = request.args
    try:
        vmid = _whole(args.get("vmid"), "vmid", MAX_VMID)
        limit = _whole(args.get("limit"), "limit", MAX_LIMIT) or 100
        before = _whole(args.get("before"), "before", 2**62)
        since = parse_since(args.get("since"))
    except ValueError as exc:
        message = str(exc) if ":" in str(exc) else f"bad query parameter: {exc}"
        return jsonify({"error": message}), 400
    try:
        rows = ctx.store.history.rows(cluster=args.get("cluster"), vmid=vmid, since=since, outcome=args.get("outcome"),
                                 limit=limit, before_id=before)
    except SQLAlchemyError:
        return jsonify({"error": "the database is unavailable"}), 503
    following = rows[-1].id if len(rows) == limit else None
    return jsonify({"resets": [action_json(r) for r in rows], "next": following}), 200


def _whole(value: str | None, name: str, high: int) -> int | None:
    """A query parameter that must be a whole number from 1 to `high` (the database's integers are bounded)."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 20 or not 1 <= int(text) <= high:
        raise ValueError(f"{name}: must be a whole number from 1 to {high}, got {value[:40]!r}")
    return int(text)


def parse_since(value: str | None, now: float | None = None) -> float | None:
    """`since` as unix seconds: a duration back from now (`24h`), unix seconds, or an RFC 3339 time."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"since: {value!r} is not a time")
        return seconds
    try:
        return (now or time.time()) - parse_duration(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"since: {value!r} is not a duration (24h), unix seconds or an RFC 3339 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
