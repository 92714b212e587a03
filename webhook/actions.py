"""Proxmox actions: send one, follow its UPID to the exit status, and find out what happened when the
POST itself gave no clear answer.

A locked guest still gets a UPID and fails inside the task; that is a failed attempt with the task's
message. A timeout or 5xx on the POST may or may not have started a task, so the node's task list is
read (our task type for this guest, since just before the POST) before anything is tried again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from vmhealth.pve import PveClient, PveError

log = logging.getLogger(__name__)

# The worker type Proxmox gives each action's task (UPID field 6).
TASK_TYPES = {
    ("qemu", "reset"): "qmreset",
    ("qemu", "stop"): "qmstop",
    ("qemu", "start"): "qmstart",
    ("lxc", "reboot"): "vzreboot",
    ("lxc", "stop"): "vzstop",
    ("lxc", "start"): "vzstart",
}


@dataclass
class Result:
    """The outcome of one action: success, failed or unknown, with the task's trace."""

    outcome: str
    upid: str | None = None
    exitstatus: str | None = None
    error: str | None = None


def task_ok(exitstatus: str | None) -> bool:
    return exitstatus is not None and (exitstatus == "OK" or exitstatus.startswith("WARNINGS"))


def follow(client: PveClient, node: str, upid: str, timeout: float, interval: float) -> Result:
    """Poll the task until it stops or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = client.task_status(node, upid)
        except PveError as exc:
            status = {}
            last_error = str(exc)
        else:
            last_error = None
        if status.get("status") == "stopped":
            exitstatus = status.get("exitstatus")
            if task_ok(exitstatus):
                return Result("success", upid, exitstatus)
            return Result("failed", upid, exitstatus, f"task failed: {exitstatus}")
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error}" if last_error else ""
            return Result("unknown", upid, None, f"task still running after {timeout:.0f}s{detail}")
        time.sleep(interval)


def find_task(client: PveClient, node: str, kind: str, action: str, vmid: int, since: float,
              until: float | None = None, taken: frozenset[str] = frozenset()) -> str | None:
    """The UPID of our action's task on `node` started at or after `since` (unix seconds), if any.

    `until` and `taken` keep a later attempt's task from being credited to an earlier one: tasks
    started at or after `until`, and UPIDs already recorded for other attempts, are not ours."""
    task_type = TASK_TYPES.get((kind, action))
    tasks = client.tasks(node, vmid=vmid, typefilter=task_type, since=int(since), source="all", limit=50)
    for task in sorted(tasks or [], key=lambda t: t.get("starttime", 0)):
        started = task.get("starttime", 0)
        if (task.get("type") == task_type and str(task.get("id")) == str(vmid) and started >= since
                and (until is None or started < until) and task.get("upid") not in taken):
            return task.get("upid")
    return None


def act(
    client: PveClient, node: str, kind: str, vmid: int, action: str, timeout: float, interval: float,
    settle: float = 0.0,
) -> Result:
    """POST the action and follow it; on an unknown outcome, look for the task before giving up."""
    sent_at = time.time() - 5  # Proxmox's clock may trail ours a little
    try:
        upid = client.guest_action(node, kind, vmid, action)
    except PveError as exc:
        if not exc.unknown_outcome:
            return Result("failed", None, None, str(exc))
        log.warning("%s of %s/%s: %s; reading the task list of %s", action, kind, vmid, exc, node)
        return recover(client, node, kind, vmid, action, sent_at, timeout, interval, str(exc), settle)
    if not isinstance(upid, str) or not upid.startswith("UPID:"):
        return Result("unknown", None, None, f"Proxmox answered {upid!r} instead of a UPID")
    return follow(client, node, upid, timeout, interval)


def recover(
    client: PveClient, node: str, kind: str, vmid: int, action: str, since: float, timeout: float,
    interval: float, cause: str, settle: float = 0.0, until: float | None = None,
    taken: frozenset[str] = frozenset(),
) -> Result:
    """What happened to an action whose POST had no clear answer: its task if one exists, else unknown."""
    deadline = time.monotonic() + settle
    while True:
        try:
            upid = find_task(client, node, kind, action, vmid, since, until, taken)
        except PveError as exc:
            return Result("unknown", None, None, f"{cause}; task list unreadable: {exc}")
        if upid:
            result = follow(client, node, upid, timeout, interval)
            result.error = (result.error + "; " if result.error else "") + f"found after: {cause}"
            return result
        if time.monotonic() >= deadline:
            return Result("unknown", None, None, f"{cause}; no {action} task on {node} since the request")
        time.sleep(interval)


def escalate(client: PveClient, node: str, kind: str, vmid: int, timeout: float, interval: float) -> Result:
    """Stop, then start: for a guest a reset did not bring back. Never for HA-managed guests."""
    stopped = act(client, node, kind, vmid, "stop", timeout, interval)
    if stopped.outcome != "success":
        stopped.error = f"stop: {stopped.error}"
        return stopped
    started = act(client, node, kind, vmid, "start", timeout, interval)
    started.upid = f"{stopped.upid} {started.upid}" if started.upid else stopped.upid
    if started.outcome != "success":
        started.error = f"start after stop: {started.error}"
    return started


def describe(result: Any) -> str:
    return result.error or result.exitstatus or result.outcome
