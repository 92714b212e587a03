"""The control API under /_sim/: switch faults on and off while the simulator runs, read the request
log, tasks and agent statistics. Plain JSON over the same HTTPS listener (a test tool: no auth)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .model import ApiError, Guest

if TYPE_CHECKING:
    from .server import Simulator

# agent-dead / agent-alive are silence / unsilence by another name: vmhealth's in-guest agent dies, the guest lives
GUEST_VERBS = ("hang", "unhang", "recover", "stuck", "pause", "resume", "lock", "unlock", "stop", "start", "tags",
               "migrate", "silence", "unsilence", "agent-dead", "agent-alive", "guest-agent")
VALUE_KEYS = {"pause": "qmpstatus", "lock": "lock", "tags": "tags", "guest-agent": "state"}  # verb -> body key


def guest_json(sim: Simulator, g: Guest) -> dict[str, Any]:
    now = sim.cluster.now()
    return {
        "vmid": g.vmid, "type": g.kind, "name": g.name, "node": g.node, "status": g.status,
        "qmpstatus": g.qmpstatus, "lock": g.lock, "hung": g.hung, "stuck": g.stuck, "template": g.template,
        "tags": g.tags, "ha_managed": g.ha_managed, "uuid": g.uuid, "uptime": g.uptime(now),
        "guest_uptime": g.guest_uptime(now), "agent_responsive": sim.cluster.agent_responsive(g, now),
        "agent_silenced": g.agent_silenced,
        # the QEMU guest agent (none | running | not-running) and whether agent/ping would answer now
        "guest_agent": g.guest_agent, "guest_agent_answers": sim.cluster.guest_agent_answers(g, now),
        # the hypervisor-side counters as the API shows them, and whether they grow now
        "io_active": g.io_active, "counters": dict(zip(("diskread", "diskwrite", "netin", "netout"),
                                                       g.counters(now), strict=True)),
        # when the exporter last accepted this guest's heartbeat (unix seconds), if agents are on
        "agent_last_heartbeat": sim.agents.last_sent.get(g.vmid) if sim.agents else None,
    }


def state_json(sim: Simulator) -> dict[str, Any]:
    c = sim.cluster
    return {
        "cluster": c.name, "version": c.version, "quorate": c.quorate, "quorum_override": c.quorum_override,
        "nodes": {n.name: {"online": n.online, "nodeid": n.nodeid} for n in c.nodes.values()},
        "guests": len(c.guests), "api_down": sim.api_down, "api_down_method": sim.api_down_method,
        "latency": sim.latency, "latency_method": sim.latency_method, "power_revoked": sim.auth.power_revoked,
        "audit_revoked": sim.auth.audit_revoked, "agent_ping_delay": c.agent_ping_delay,
        "faulty_guests": [guest_json(sim, g) for g in c.guests.values()
                          if g.hung or g.lock or g.agent_silenced or g.qmpstatus not in ("running", "stopped")
                          or g.guest_agent == "not-running"],
    }


def _number(body: dict[str, Any], key: str, default: float) -> float:
    try:
        return float(body.get(key, default))
    except (TypeError, ValueError):
        raise ApiError(400, f"{key} must be a number") from None


def handle(sim: Simulator, method: str, parts: list[str], query: dict[str, str], body: dict[str, Any]) -> Any:
    """Answer /_sim/<parts...>; errors are ApiError (400 bad input, 404 unknown, 409 not possible now)."""
    c = sim.cluster
    c.tick()
    with c.lock:
        match method, parts:
            case "GET", ["state"]:
                return state_json(sim)
            case "GET", ["guests", vmid]:
                return guest_json(sim, c.guest(_vmid(vmid)))
            case "POST", ["guests", vmid, "migrate"]:
                return guest_json(sim, c.migrate(_vmid(vmid), str(body.get("node", "")), _number(body, "seconds", 0)))
            case "POST", ["guests", vmid, verb] if verb in GUEST_VERBS:
                value = body.get(VALUE_KEYS.get(verb, ""))
                return guest_json(sim, c.set_fault(_vmid(vmid), verb, value))
            case "POST", ["nodes", node, ("offline" | "online") as state]:
                n = c.set_node_online(node, state == "online")
                return {"node": n.name, "online": n.online, "quorate": c.quorate}
            case "POST", ["quorum"]:
                quorate = body.get("quorate")
                if quorate not in (True, False, None):
                    raise ApiError(400, "quorate must be true, false or null (computed from the online nodes)")
                c.set_quorum(quorate)
                return {"quorate": c.quorate, "quorum_override": c.quorum_override}
            case "POST", ["api"]:
                status = int(_number(body, "status", 500))
                if not 500 <= status <= 599:
                    raise ApiError(400, "status must be from 500 to 599")
                method_only = _method(body)
                sim.api_down = status if body.get("down", True) else None
                sim.api_down_method = method_only if sim.api_down else None
                return {"api_down": sim.api_down, "method": sim.api_down_method}
            case "POST", ["latency"]:
                seconds = _number(body, "seconds", 0)
                if not 0 <= seconds <= 120:
                    raise ApiError(400, "seconds must be from 0 to 120")
                method_only = _method(body)
                sim.latency = seconds
                sim.latency_method = method_only if seconds else None
                return {"latency": sim.latency, "method": sim.latency_method}
            case "POST", ["privileges"]:
                if "power" in body:
                    sim.auth.power_revoked = not bool(body["power"])
                if "audit" in body:
                    sim.auth.audit_revoked = not bool(body["audit"])
                return {"power_revoked": sim.auth.power_revoked, "audit_revoked": sim.auth.audit_revoked}
            case "POST", ["heal"]:
                return sim.heal()
            case "GET", ["requests"]:
                return sim.requests.snapshot(int(query.get("recent", 100)))
            case "DELETE", ["requests"]:
                sim.requests.clear()
                return {"cleared": True}
            case "GET", ["tasks"]:
                vmid = _vmid(query["vmid"]) if query.get("vmid") else None
                return [{**t.status_json(), "vmid": t.vmid, "requested_at": t.requested_at} for t in c.tasks.values()
                        if vmid is None or t.vmid == vmid]
            case "GET", ["agents"]:
                return sim.agents.stats() if sim.agents else {"enabled": False}
    raise ApiError(404, f"no control endpoint {method} /_sim/{'/'.join(parts)}")


def _method(body: dict[str, Any]) -> str | None:
    """The optional `method` a fault is limited to (GET or POST); None means every call."""
    method = body.get("method")
    if method is None:
        return None
    if str(method).upper() not in ("GET", "POST"):
        raise ApiError(400, f"method must be GET or POST, not {method!r}")
    return str(method).upper()


def _vmid(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ApiError(400, f"vmid must be a number, not {text!r}") from None
