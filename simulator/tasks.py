"""Proxmox tasks: UPIDs in the real format and the status a task reports while and after it runs."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

UPID_RE = re.compile(
    r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):"
    r"([^:\s/]+):([^:\s/]*):([^:\s/]+):$"
)


def make_upid(node: str, pid: int, starttime: float, task_type: str, task_id: str, user: str) -> str:
    """`UPID:node:PID:PSTART:STARTTIME:type:id:user:` with the hex widths pve-common uses."""
    pstart = (pid * 37) % 0xFFFFFFFF  # clock ticks since boot; only needs to be stable per task
    return f"UPID:{node}:{pid:08X}:{pstart:08X}:{int(starttime):08X}:{task_type}:{task_id}:{user}:"


def parse_upid(upid: str) -> dict[str, Any] | None:
    """The fields of a UPID, or None when it is not one."""
    match = UPID_RE.match(upid)
    if not match:
        return None
    return {
        "node": match.group(1), "pid": int(match.group(3), 16), "pstart": int(match.group(4), 16),
        "starttime": int(match.group(5), 16), "type": match.group(6), "id": match.group(7), "user": match.group(8),
    }


@dataclass
class Task:
    upid: str
    vmid: int
    end_at: float
    exitstatus_when_done: str
    effect: Callable[[], None] | None
    fields: dict[str, Any]
    status: str = "running"
    endtime: int | None = None
    requested_at: float = 0.0  # when the POST arrived, to the microsecond (the UPID has whole seconds)

    @classmethod
    def create(cls, upid: str, vmid: int, end_at: float, effect: Callable[[], None] | None, exitstatus: str,
               requested_at: float = 0.0) -> Task:
        fields = parse_upid(upid)
        assert fields is not None, upid
        return cls(upid=upid, vmid=vmid, end_at=end_at, exitstatus_when_done=exitstatus, effect=effect, fields=fields,
                   requested_at=requested_at)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def node(self) -> str:
        return self.fields["node"]

    @property
    def user(self) -> str:
        return self.fields["user"]

    @property
    def ok(self) -> bool:
        return not self.running and self.exitstatus_when_done == "OK"

    def finish(self) -> None:
        self.status = "stopped"
        self.endtime = int(self.end_at)
        self.effect = None

    def status_json(self) -> dict[str, Any]:
        """The body of GET /nodes/{node}/tasks/{upid}/status (a token's user split in user + tokenid)."""
        body = {"upid": self.upid, **self.fields, "status": self.status}
        user, _, tokenid = self.user.partition("!")
        body["user"] = user
        if tokenid:
            body["tokenid"] = tokenid
        if not self.running:
            body["exitstatus"] = self.exitstatus_when_done
        return body

    def list_json(self) -> dict[str, Any]:
        """An entry of GET /nodes/{node}/tasks: finished tasks carry endtime and status (OK or the error)."""
        body = {"upid": self.upid, **self.fields}
        if not self.running:
            body["endtime"] = self.endtime
            body["status"] = self.exitstatus_when_done
        return body
