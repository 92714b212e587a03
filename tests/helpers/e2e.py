"""What the end-to-end suites share: fast stack settings, the reset-latency bound, and ways to wait on
what the simulator, Prometheus, Alertmanager and the webhook saw.

Every suite starts its stack with `whole_stack` (`vmhealth.stack.running`: real Prometheus and
Alertmanager, `vmhealth exporter|webhook` subprocesses, the simulator over HTTPS) and stops it in teardown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.helpers.requirements import binary
from vmhealth.durations import parse_duration
from vmhealth.stack.processes import wait_for
from vmhealth.stack.running import Stack, StackSettings, running_stack

# Seconds for the webhook's part of the latency: claim the event, read /cluster/resources,
# /cluster/status and status/current, then POST the reset (a few HTTPS calls on a loaded machine).
WEBHOOK_SLACK = 5.0
AGENT_JITTER = 0.1  # the simulated agents' ±10 % on their interval


def settings(**overrides: Any) -> StackSettings:
    """The stack's defaults (10s stale timeout, 2s scrape/evaluation/poll, rules at 1/12 of their `for:`),
    12 guests on 3 nodes, and a cooldown long enough that a reset guest cannot be reset again while its
    alert resolves."""
    base = StackSettings(nodes=3, guests=12, policy={"cooldown": "10m"})
    return replace(base, **overrides)


@contextmanager
def whole_stack(workdir: Path, **overrides: Any) -> Iterator[Stack]:
    """The stack with `settings(**overrides)` in `workdir`; skips, or fails under
    VMHEALTH_REQUIRE_BINARIES, when Prometheus or Alertmanager is missing."""
    binary("prometheus"), binary("alertmanager")
    with running_stack(settings(**overrides), workdir) as running:
        yield running


def rule_for(stack: Stack, alertname: str) -> float:
    """The `for:` of an alert in the scaled rule file the stack's Prometheus actually loaded."""
    document = yaml.safe_load((stack.workdir / "vmhealth-alerts.yml").read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alertname:
                return parse_duration(rule.get("for", 0))
    raise KeyError(f"no alert {alertname} in the stack's rules")


def latency_bound(stack: Stack) -> tuple[float, str]:
    """The most a reset may take after a guest's last heartbeat, and the formula with its numbers:

        max(stale_timeout, agent interval + poll + io_window) + for(VMHung, scaled)
          + 2 x (scrape + evaluation) + group_wait + agent interval (with jitter) + poll interval + webhook slack

    (a guest frozen just before its next heartbeat is seen active until the first poll after the freeze,
    and is I/O-idle one io_window after that).
    """
    s = stack.settings
    agent = s.agent_interval * (1 + AGENT_JITTER)
    stale, io_idle = parse_duration(s.stale_timeout), agent + parse_duration(s.poll_interval) + parse_duration(
        s.io_window)
    terms = {
        "max(stale_timeout, agent+poll+io_window)": max(stale, io_idle),
        "for(VMHung)": rule_for(stack, "VMHung"),
        "2x(scrape+evaluation)": 2 * (parse_duration(s.scrape_interval) + parse_duration(s.evaluation_interval)),
        "group_wait": parse_duration(s.group_wait),
        "agent_interval": agent,
        "poll_interval": parse_duration(s.poll_interval),
        "webhook": WEBHOOK_SLACK,
    }
    bound = sum(terms.values())
    return bound, " + ".join(f"{name} {value:g}s" for name, value in terms.items()) + f" = {bound:g}s"


def tasks_since(stack: Stack, since: float, vmid: int | None = None) -> list[dict[str, Any]]:
    """The reset/reboot tasks the simulator received from `since` (unix seconds) on."""
    return [t for t in stack.sim.resets(vmid) if t["requested_at"] >= since]


def wait_for_reset(stack: Stack, vmid: int, since: float, seconds: float) -> dict[str, Any]:
    """The first reset task of `vmid` requested after `since`; on timeout the error carries what the
    stack knew (alerts, history, the webhook's log) so that a failure explains itself."""
    try:
        tasks = wait_for(lambda: tasks_since(stack, since, vmid), seconds, f"a reset of guest {vmid}", interval=0.2)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{describe(stack)}") from None
    return min(tasks, key=lambda t: t["requested_at"])


def alerts(stack: Stack, alertname: str, state: str | None = None) -> list[dict[str, Any]]:
    """Prometheus' alerts of that name (pending or firing, or only `state`)."""
    return [a for a in stack.alerts()
            if a["labels"].get("alertname") == alertname and (state is None or a["state"] == state)]


def alert_vmids(stack: Stack, alertname: str, state: str | None = None) -> set[int]:
    return {int(a["labels"]["vmid"]) for a in alerts(stack, alertname, state) if "vmid" in a["labels"]}


def ever_alerted(stack: Stack, alertname: str, seconds: float, state: str | None = None) -> set[int]:
    """The vmids Prometheus had `alertname` for (pending or firing, or only `state`) at any evaluation in
    the last `seconds`."""
    window = max(1, int(seconds + 0.999))
    selector = f'alertname="{alertname}"' + (f', alertstate="{state}"' if state else "")
    result = stack.query(f"max by (vmid) (max_over_time(ALERTS{{{selector}}}[{window}s]))")
    return {int(r["metric"]["vmid"]) for r in result if "vmid" in r["metric"]}


def ever_hung(stack: Stack, seconds: float) -> set[int]:
    """The vmids the rules judged hung (cluster_vmid:vmhealth_guest_hung:bool == 1) in the last `seconds`."""
    window = max(1, int(seconds + 0.999))
    result = stack.query(f"max_over_time(cluster_vmid:vmhealth_guest_hung:bool[{window}s]) == 1")
    return {int(r["metric"]["vmid"]) for r in result}


def am_alerts(url: str, alertname: str) -> list[dict[str, Any]]:
    """An Alertmanager's alerts of that name, with `status.state` active / suppressed and `inhibitedBy`."""
    reply = requests.get(f"{url}/api/v2/alerts", params={"filter": f'alertname="{alertname}"'}, timeout=10)
    reply.raise_for_status()
    return reply.json()


# Guests Proxmox says are running whose heartbeat the rules do not see as fresh (never reported, or stale).
NOT_FRESH = ("(cluster_vmid:vmhealth_pve_guest_running:max == 1)"
             " unless on (cluster, vmid) (cluster_vmid:vmhealth_heartbeat_stale:bool == 0)")


def settled(stack: Stack, seconds: float = 60) -> float:
    """Wait until every running guest's heartbeat is fresh in the rules (all reported, none stale, so
    none can be judged hung a moment later) and no VMHung or VMHeartbeatStale is pending or firing (the
    alert rules are evaluated apart from the recording rules, so a guest reset by the test before may
    still be alerted on for an evaluation after its heartbeat is fresh); the time it was so."""
    def calm() -> bool:
        return (bool(stack.query("cluster_vmid:vmhealth_pve_guest_running:max == 1"))
                and not stack.query(NOT_FRESH) and not alerts(stack, "VMHung")
                and not alerts(stack, "VMHeartbeatStale"))
    wait_for(calm, seconds, "every running guest to report fresh heartbeats", interval=0.5)
    return time.time()


def history(stack: Stack, vmid: int, outcome: str | None = None) -> list[dict[str, Any]]:
    """The webhook's decisions about `vmid` (all replicas share the database), optionally one outcome."""
    return [r for r in stack.resets(vmid) if outcome is None or r["outcome"] == outcome]


def describe(stack: Stack) -> str:
    """What the stack looks like now, for assertion messages."""
    parts = []
    for what, read in (("alerts", lambda: [(a["labels"].get("alertname"), a["labels"].get("vmid"), a["state"])
                                           for a in stack.alerts()]),
                       ("history", lambda: [(r["vmid"], r["outcome"], r["reason"] or r["error"])
                                            for r in stack.resets()][:20]),
                       ("sim faults", lambda: [(g["vmid"], g["hung"], g["lock"], g["qmpstatus"])
                                               for g in stack.sim.state()["faulty_guests"]])):
        try:
            parts.append(f"{what}: {read()}")
        except Exception as exc:  # a part that cannot be read says so instead of hiding the rest
            parts.append(f"{what}: unavailable ({exc})")
    log = stack.log("webhook")[-1500:]
    return "\n".join(parts) + f"\nwebhook log ends with:\n{log}"
