"""The remediation policy as pure functions: each answers "may we act, and if not, why" from facts.

The facts (Proxmox's live state, counts from the database) are gathered by `remediate.py`; keeping
the judgement here makes every rule testable without a network or a database. A refusal is a
`Skip(reason, detail)`; the reasons are stable words, listed in the README, that end up in the
history as `skipped:<reason>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from vmhealth.pve import parse_tags

# Reasons that pass by themselves: the next delivery of a still-firing alert looks again.
TRANSIENT = frozenset(
    {"cooldown", "rate-limited", "busy", "circuit-open", "locked", "booting", "node-offline", "no-quorum",
     "proxmox-unreachable", "disabled"}
)


@dataclass(frozen=True)
class Skip:
    """Why a guest is not touched now."""

    reason: str
    detail: str = ""

    @property
    def outcome(self) -> str:
        return f"skipped:{self.reason}"


def check_allowed(policy: SimpleNamespace, vmid: int, tags: list[str]) -> Skip | None:
    """The allow/deny lists: deny by vmid or tag always wins; with opt_in, only allowed guests pass."""
    if vmid in policy.deny_vmids:
        return Skip("denied-vmid", f"{vmid} is in webhook.policy.deny_vmids")
    denied = sorted(set(tags) & set(policy.deny_tags))
    if denied:
        return Skip("denied-tag", f"tagged {', '.join(denied)}")
    if policy.opt_in and vmid not in policy.allow_vmids and not set(tags) & set(policy.allow_tags):
        return Skip("not-opted-in", "opt_in is on and the guest is neither in allow_vmids nor tagged "
                    + (", ".join(policy.allow_tags) or "(no allow_tags)"))
    return None


def find_guest(resources: list[dict[str, Any]], vmid: int) -> dict[str, Any] | None:
    """The guest's entry in /cluster/resources (its node now, wherever it migrated)."""
    for entry in resources:
        if entry.get("type") in ("qemu", "lxc") and int(entry.get("vmid", -1)) == vmid:
            return entry
    return None


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
    """Too many of a cluster's guests hung at once means the monitoring broke, not the guests."""
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
