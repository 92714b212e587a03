"""The remediation policy as pure functions: each answers "may we act, and if not, why" from facts.

The facts (Proxmox's live state, counts from the database) are gathered by `remediate.py`; keeping
the judgement here makes every rule testable without a network or a database. A refusal is a
`Skip(reason, detail)`; the reasons are stable words, listed in docs/webhook.md, that end up in the
history as `skipped:<reason>`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from vmhealth.config import PolicyConfig
from vmhealth.pve import PveError, is_timeout, parse_tags

# Final refusals about a guest no configured Proxmox lists: its incident closes with them (`closed:<reason>`).
CLOSING = frozenset({"not-found", "unknown-cluster"})

# Reasons that pass by themselves: the next delivery of a still-firing alert looks again.
TRANSIENT = frozenset(
    {"cooldown", "rate-limited", "busy", "circuit-open", "locked", "booting", "node-offline", "no-quorum",
     "proxmox-unreachable", "disabled", "remediation-paused", "active", "guest-agent-alive", "heartbeat-fresh"}
)


@dataclass(frozen=True)
class Skip:
    """Why a guest is not touched now."""

    reason: str
    detail: str = ""

    @property
    def outcome(self) -> str:
        return f"skipped:{self.reason}"


def check_allowed(limits: PolicyConfig, vmid: int, tags: list[str]) -> Skip | None:
    """The allow/deny lists: deny by vmid or tag always wins; with opt_in, only allowed guests pass."""
    if vmid in limits.deny_vmids:
        return Skip("denied-vmid", f"{vmid} is in webhook.policy.deny_vmids")
    denied = sorted(set(tags) & set(limits.deny_tags))
    if denied:
        return Skip("denied-tag", f"tagged {', '.join(denied)}")
    if limits.opt_in and vmid not in limits.allow_vmids and not set(tags) & set(limits.allow_tags):
        return Skip("not-opted-in", "opt_in is on and the guest is neither in allow_vmids nor tagged "
                    + (", ".join(limits.allow_tags) or "(no allow_tags)"))
    return None


def find_guest(resources: list[dict[str, Any]], vmid: int) -> dict[str, Any] | None:
    """The guest's entry in /cluster/resources (its node now, wherever it migrated)."""
    for entry in resources:
        if entry.get("type") in ("qemu", "lxc") and int(entry.get("vmid", -1)) == vmid:
            return entry
    return None


def listed_running(resources: list[dict[str, Any]]) -> set[int]:
    """The vmids /cluster/resources lists as running guests (templates left out)."""
    return {int(entry["vmid"]) for entry in resources
            if entry.get("type") in ("qemu", "lxc") and entry.get("status") == "running"
            and not int(entry.get("template", 0) or 0)}


def count_guests(resources: list[dict[str, Any]]) -> int:
    """The guests of /cluster/resources, templates left out: the circuit breaker's denominator."""
    return sum(1 for r in resources if r.get("type") in ("qemu", "lxc") and not int(r.get("template", 0) or 0))


def check_node(cluster_status: list[dict[str, Any]], node: str) -> Skip | None:
    """The node must be online and, in a cluster, the cluster quorate (a standalone node has quorum)."""
    online = None
    for entry in cluster_status:
        if entry.get("type") == "cluster" and not int(entry.get("quorate", 0)):
            return Skip("no-quorum", f"cluster {entry.get('name', '')!r} is not quorate")
        if entry.get("type") == "node" and entry.get("name") == node:
            online = bool(int(entry.get("online", 0)))
    if online is False:
        return Skip("node-offline", f"node {node} is offline")
    if online is None:
        return Skip("node-offline", f"node {node} is not in /cluster/status")
    return None


def check_guest(kind: str, status: dict[str, Any], boot_grace: float) -> Skip | None:
    """`status/current`: running, QEMU's qmpstatus running, no lock, not a template, past boot grace."""
    if int(status.get("template", 0) or 0):
        return Skip("template", "templates are never reset")
    if status.get("status") != "running":
        return Skip("not-running", f"Proxmox status is {status.get('status')!r}: it is meant to be off")
    if status.get("lock"):
        return Skip("locked", f"lock={status['lock']}")
    qmpstatus = status.get("qmpstatus")
    if kind == "qemu" and qmpstatus is not None and qmpstatus != "running":
        return Skip("paused", f"qmpstatus={qmpstatus}: paused or I/O error is not hung")
    uptime = float(status.get("uptime", 0) or 0)
    if uptime < boot_grace:
        return Skip("booting", f"uptime {uptime:.0f}s is inside the boot grace of {boot_grace:.0f}s")
    return None


def check_circuit(hung: int, guests: int, max_fraction: float, min_hung: int) -> Skip | None:
    """Too many of a cluster's guests hung at once means the monitoring broke, not the guests.

    `hung` counts only open incidents of guests Proxmox lists as running (`listed_running`): alerts
    for guests that do not exist, or are off, cannot open the breaker."""
    if guests <= 0 or hung < min_hung:
        return None
    if hung / guests > max_fraction:
        return Skip("circuit-open", f"{hung} of {guests} guests hung, above {max_fraction:.0%}")
    return None


def check_rate(actions_last_hour: int, max_per_hour: int) -> Skip | None:
    """The global rate limit, counted over every replica's actions in the database."""
    if actions_last_hour >= max_per_hour:
        return Skip("rate-limited", f"{actions_last_hour} actions in the last hour (limit {max_per_hour})")
    return None


def cooldown_after(attempts: int, cooldown: float, max_cooldown: float) -> float:
    """Seconds to wait after attempt number `attempts` (1, 2, ...): doubling, capped."""
    return float(min(cooldown * (2 ** max(attempts - 1, 0)), max(max_cooldown, cooldown)))


def action_for(kind: str) -> str:
    """The Proxmox action that resets a guest: LXC has no `status/reset`, so it is rebooted."""
    return "reboot" if kind == "lxc" else "reset"


def guest_tags(resource: dict[str, Any], status: dict[str, Any] | None = None) -> list[str]:
    return parse_tags((status or {}).get("tags") or resource.get("tags"))


def ha_managed(status: dict[str, Any]) -> bool:
    ha = status.get("ha") or {}
    return bool(int(ha.get("managed", 0) or 0)) if isinstance(ha, dict) else False


def io_bytes_live(resource: dict[str, Any]) -> float | None:
    """Disk writes + network transmit, bytes, of the guest's /cluster/resources entry; None when either is missing."""
    values = [resource.get("diskwrite"), resource.get("netout")]
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        return None
    total = float(sum(values))
    return total if math.isfinite(total) and total >= 0 else None


def check_active(judged: float | None, judged_at: float | None, live: float | None, idle_rate: float,
                 now: float) -> Skip | None:
    """The guest's I/O since the rules judged it idle: `judged` bytes then, `live` bytes now.

    Counters that went backwards mean the guest restarted or migrated since (its QEMU process is new),
    so the rules' judgement is about another run; growth beyond `idle_rate` bytes per second over the
    time since `judged_at` means it is doing I/O again. Without both numbers there is no evidence."""
    if judged is None or live is None or judged_at is None:
        return None
    if live < judged:
        return Skip("active", f"its I/O counters went back from {judged:.0f} to {live:.0f} bytes since the rules "
                    "judged it idle: restarted or migrated since")
    elapsed = max(now - judged_at, 1.0)
    allowed = idle_rate * elapsed
    grown = live - judged
    if grown > allowed:
        ahead = f"; the rules' clock is {judged_at - now:.0f}s ahead of this one" if judged_at > now + 1 else ""
        return Skip("active", f"wrote/sent {grown:.0f} bytes since the rules judged it idle {elapsed:.0f}s ago "
                    f"(idle allows {allowed:.0f} at {idle_rate:g} B/s){ahead}")
    return None


def agent_configured(status: dict[str, Any], resource: dict[str, Any] | None = None) -> bool:
    """Whether the QEMU guest agent is enabled: `status/current`'s `agent`, or the VM's own `agent` value."""
    return any(_agent_on(source.get("agent")) for source in (status, resource or {}))


def _agent_on(value: Any) -> bool:
    """1/true, or a VM config's `agent` property string (`1,fstrim_cloned_disks=1`, `enabled=1,type=virtio`)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        for part in value.split(","):
            key, sep, flag = part.partition("=")
            if not sep or key.strip() == "enabled":
                return (flag if sep else key).strip().lower() in ("1", "true", "yes", "on")
    return False


_VM_NOT_RUNNING = re.compile(r"\bVM \d+ is not running")


def guest_agent_answer(error: PveError | None) -> str:
    """What a guest-agent ping said, as the word the history keeps (`alive` when it answered)."""
    if error is None:
        return "alive"
    if error.status == 403:
        return "forbidden"
    if is_timeout(error):
        return "timeout"
    text = str(error)
    if error.status == 500:
        if "QEMU guest agent is not running" in text:
            return "not-running"
        if "No QEMU guest agent configured" in text:
            return "not-configured"
        if _VM_NOT_RUNNING.search(text):
            return "vm-not-running"
    return f"error: {text}"[:300]


def check_heartbeat(age: float | None, stale_timeout: float) -> Skip | None:
    """A heartbeat fresher than the stale timeout means the agent in the guest is running: not hung."""
    if age is not None and age < stale_timeout:
        return Skip("heartbeat-fresh", f"its last heartbeat is {age:.0f}s old, within the stale timeout "
                    f"{stale_timeout:g}s: the guest is reporting")
    return None


def check_guest_agent(answer: str) -> Skip | None:
    """An answering guest agent means the guest OS runs: whatever the heartbeat says, it is not hung."""
    if answer == "alive":
        return Skip("guest-agent-alive", "the QEMU guest agent answered: the guest OS is running")
    return None
