"""The simulated cluster's state: nodes, guests, tasks and the faults switched on.

Everything that changes lives in `Cluster`, behind one lock. Time-dependent values (CPU, memory,
uptime, running tasks) are computed from the clock when read, so no thread has to "move" 10,000
guests; `tick()` finishes the tasks whose time has come and applies their effect. `version` grows
on every change, so renderers can cache their JSON per (version, second).

I/O counters (diskread, diskwrite, netin, netout) are an accumulator per guest: the values at
`io_at`, growing at the guest's rates from then on while the guest does I/O (running, not hung,
qmpstatus running) and frozen otherwise. Every change of that state first calls `Guest.settle_io`,
so a read is O(1) whatever happened before; a new QEMU process (start, reboot, migration) starts
them at 0, a reset keeps them.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .tasks import Task, make_upid

GIB = 1024**3
UUID_NAMESPACE = uuid.UUID("7f1d7f5e-2b0c-4a53-9d51-3c1f0a5e8b10")
QMP_STATES = ("running", "paused", "io-error", "prelaunch", "suspended", "internal-error")
GUEST_AGENT_STATES = ("none", "running", "not-running")  # the QEMU guest agent: not configured, answering, down
LOCKS = ("backup", "clone", "create", "migrate", "rollback", "snapshot", "snapshot-delete", "suspended", "suspending")


class ApiError(Exception):
    """An error the API returns as `{"data": null, "message": "<message>\\n"}` with `status`."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None, delay: float = 0.0):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.delay = delay  # seconds the server waits before answering (outside the cluster lock)


def _unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) for the given parts (same guest, same value)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass
class Node:
    name: str
    nodeid: int
    online: bool = True
    maxcpu: int = 16
    maxmem: int = 128 * GIB
    started: float = field(default_factory=time.time)

    @property
    def ip(self) -> str:
        return f"10.0.0.{self.nodeid}"


@dataclass
class Guest:
    vmid: int
    kind: str  # "qemu" | "lxc"
    name: str
    node: str
    cpus: int
    maxmem: int
    maxdisk: int
    started: float  # process start (Proxmox's uptime counts from here)
    booted: float  # guest OS boot (the agent's uptime counts from here)
    status: str = "running"
    qmpstatus: str = "running"
    lock: str | None = None
    hung: bool = False
    stuck: bool = False
    agent_silenced: bool = False  # the guest is fine, but its heartbeats do not reach the exporter
    guest_agent: str = "running"  # the QEMU guest agent: GUEST_AGENT_STATES (LXC: always "none")
    template: bool = False
    tags: str = ""
    ha_managed: bool = False
    pid: int = 0
    migrate_to: str | None = None
    migrate_at: float = 0.0
    seed: float = field(init=False)  # per-guest constants, hashed once: rendering 10,000 guests is hot
    disk_share: float = field(init=False)
    uuid: str = field(init=False)
    io_rate: tuple[float, float, float, float] = field(init=False)  # bytes/s: diskread, diskwrite, netin, netout
    io_base: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # the counters at io_at
    io_at: float = 0.0

    def __post_init__(self) -> None:
        self.seed = _unit("guest", self.vmid)
        self.disk_share = 0.2 + 0.5 * _unit("disk", self.vmid)
        self.uuid = str(uuid.uuid5(UUID_NAMESPACE, f"vm:{self.vmid}"))
        s = self.seed
        # diskwrite >= 8,000 B/s and netout >= 6,000 B/s for every guest: far above an idle threshold of 1 KiB/s
        self.io_rate = (16_000 + 200_000 * s, 8_000 + 100_000 * s, 8_000 + 60_000 * s, 6_000 + 30_000 * s)
        if self.kind != "qemu":
            self.guest_agent = "none"

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def label(self) -> str:
        return "VM" if self.kind == "qemu" else "CT"

    def uptime(self, now: float) -> int:
        return max(0, int(now - self.started)) if self.running else 0

    def guest_uptime(self, now: float) -> int:
        return max(0, int(now - self.booted)) if self.running else 0

    def cpu(self, now: float) -> float:
        """CPU use as a fraction of the guest's vCPUs: a slow wave around a per-guest level."""
        if not self.running or self.qmpstatus != "running":
            return 0.0
        if self.hung:
            return round(1.0 / self.cpus, 4)  # one vCPU spinning
        level = 0.02 + 0.3 * self.seed + 0.08 * math.sin(now / 60.0 + self.seed * 6.283)
        return round(min(1.0, max(0.001, level)), 4)

    def mem(self, now: float) -> int:
        if not self.running:
            return 0
        share = 0.3 + 0.3 * self.seed + 0.04 * math.sin(now / 300.0 + self.seed * 6.283)
        return int(self.maxmem * share)

    def disk_used(self) -> int:
        return int(self.maxdisk * self.disk_share)

    @property
    def io_active(self) -> bool:
        """Whether the guest does disk and network I/O now: a hung, stuck or paused guest does none."""
        return self.status == "running" and not self.hung and self.qmpstatus == "running"

    def counters(self, now: float) -> tuple[int, int, int, int]:
        """diskread, diskwrite, netin, netout in bytes: 0 without a QEMU process (stopped), frozen while idle."""
        if self.status != "running":
            return 0, 0, 0, 0
        base = self.io_base
        if self.hung or self.qmpstatus != "running":
            return int(base[0]), int(base[1]), int(base[2]), int(base[3])
        elapsed = now - self.io_at
        if elapsed < 0:
            elapsed = 0.0
        rate = self.io_rate
        return (int(base[0] + rate[0] * elapsed), int(base[1] + rate[1] * elapsed),
                int(base[2] + rate[2] * elapsed), int(base[3] + rate[3] * elapsed))

    def settle_io(self, now: float) -> None:
        """Fold the I/O done until `now` into the accumulator; call before changing status, hung or qmpstatus."""
        if self.io_active:
            elapsed = max(0.0, now - self.io_at)
            b, r = self.io_base, self.io_rate
            self.io_base = (b[0] + r[0] * elapsed, b[1] + r[1] * elapsed, b[2] + r[2] * elapsed,
                            b[3] + r[3] * elapsed)
        self.io_at = now

    def restart_io(self, now: float, seconds: float = 0.0) -> None:
        """Counters of a new QEMU process at `now`: 0, or what `seconds` of I/O at the guest's rates made."""
        r = self.io_rate
        self.io_base = (r[0] * seconds, r[1] * seconds, r[2] * seconds, r[3] * seconds)
        self.io_at = now

    def net(self, now: float) -> tuple[int, int]:
        counters = self.counters(now)
        return counters[2], counters[3]

    def diskio(self, now: float) -> tuple[int, int]:
        counters = self.counters(now)
        return counters[0], counters[1]


class Cluster:
    """Nodes, guests and tasks of one simulated cluster; every public method takes the lock."""

    def __init__(
        self,
        name: str = "sim",
        nodes: int = 3,
        guests: int = 30,
        lxc: int = 0,
        templates: int = 0,
        boot_seconds: float = 5.0,
        task_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        agent_ping_delay: float = 0.0,
    ):
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        if guests < 0 or lxc < 0 or templates < 0:
            raise ValueError("guest counts cannot be negative")
        self.name = name
        self.boot_seconds = boot_seconds
        self.task_seconds = task_seconds
        # how long agent/ping takes to say "QEMU guest agent is not running" (Proxmox waits ~3 s for the guest)
        self.agent_ping_delay = agent_ping_delay
        self.clock = clock
        self.lock = threading.RLock()
        self.version = 0
        self.quorum_override: bool | None = None
        self.nodes: dict[str, Node] = {f"pve{i}": Node(f"pve{i}", i) for i in range(1, nodes + 1)}
        self.guests: dict[int, Guest] = {}
        self.tasks: dict[str, Task] = {}
        self._running: list[Task] = []  # tasks not finished yet, so tick() need not scan them all
        self._migrating: list[Guest] = []
        self._next_pid = 100_000
        now = clock()
        names = list(self.nodes)
        specs = [("qemu", False)] * guests + [("lxc", False)] * lxc + [("qemu", True)] * templates
        for index, (kind, template) in enumerate(specs):
            vmid = 100 + index
            seed = _unit("guest", vmid)
            age = 3600 + int(seed * 30 * 86400)  # up for between an hour and a month already
            guest = Guest(
                vmid=vmid, kind=kind, name=f"{'ct' if kind == 'lxc' else 'vm'}{vmid}", node=names[index % len(names)],
                cpus=(1, 2, 4, 8)[int(seed * 4)], maxmem=(1, 2, 4, 8)[int(_unit("mem", vmid) * 4)] * GIB,
                maxdisk=(8, 32, 64, 128)[int(_unit("size", vmid) * 4)] * GIB,
                started=now - age, booted=now - age, template=template, ha_managed=(vmid % 10 == 9 and not template),
            )
            if template:
                guest.name = f"tpl{vmid}"
                guest.status = guest.qmpstatus = "stopped"
            else:
                guest.pid = self._new_pid()
                guest.restart_io(now, age)
            self.guests[vmid] = guest

    # -- helpers (lock held) ------------------------------------------------------------------
    def _new_pid(self) -> int:
        self._next_pid += 7
        return self._next_pid

    def _changed(self) -> None:
        self.version += 1

    def now(self) -> float:
        return self.clock()

    @property
    def quorate(self) -> bool:
        if self.quorum_override is not None:
            return self.quorum_override
        online = sum(1 for n in self.nodes.values() if n.online)
        return online * 2 > len(self.nodes)

    def node(self, name: str) -> Node:
        """The node, or the error a real cluster gives for a name that is not a member."""
        node = self.nodes.get(name)
        if node is None:
            raise ApiError(500, f"hostname lookup '{name}' failed - failed to get address info for: {name}: "
                           "Name or service not known")
        return node

    def reachable_node(self, name: str) -> Node:
        """The node if it answers; a request proxied to a node that is down gets a 595."""
        node = self.node(name)
        if not node.online:
            raise ApiError(595, f"Connection refused - no route to host {node.ip}")
        return node

    def guest_on(self, node: str, kind: str, vmid: int, writing: bool = False) -> Guest:
        """The guest `vmid` of `kind` on `node`, or the error Proxmox gives when it is not there."""
        self.reachable_node(node)
        guest = self.guests.get(vmid)
        if guest is None or guest.kind != kind or guest.node != node:
            if writing:
                raise ApiError(500, f"unable to find configuration file for VM {vmid} on node '{node}'")
            folder = "qemu-server" if kind == "qemu" else "lxc"
            raise ApiError(500, f"Configuration file 'nodes/{node}/{folder}/{vmid}.conf' does not exist")
        return guest

    def agent_responsive(self, guest: Guest, now: float) -> bool:
        """Whether the guest's in-guest agent answers (and so sends heartbeats)."""
        return (
            guest.running and not guest.template and not guest.hung and guest.qmpstatus == "running"
            and self.nodes[guest.node].online and now >= guest.booted + self.boot_seconds
        )

    def guest_agent_answers(self, guest: Guest, now: float) -> bool:
        """Whether the QEMU guest agent answers a ping: configured, its service up, and the guest OS running."""
        return guest.guest_agent == "running" and self.agent_responsive(guest, now)

    def ping_guest_agent(self, node: str, vmid: int) -> dict[str, Any]:
        """POST agent/ping: the checks and errors of qemu-server's agent_available, in its order."""
        guest = self.guest_on(node, "qemu", vmid)
        if guest.guest_agent == "none":
            raise ApiError(500, "No QEMU guest agent configured")
        if not guest.running:
            raise ApiError(500, f"VM {vmid} is not running")
        if not self.guest_agent_answers(guest, self.clock()):
            raise ApiError(500, "QEMU guest agent is not running", delay=self.agent_ping_delay)
        return {"result": {}}

    # -- time ---------------------------------------------------------------------------------
    def tick(self) -> None:
        """Finish due tasks and migrations (called before every read)."""
        with self.lock:
            now = self.clock()
            for task in [t for t in self._running if t.end_at <= now]:
                if task.effect is not None:
                    task.effect()
                task.finish()
                self._running.remove(task)
                self._changed()
            for guest in [g for g in self._migrating if g.migrate_at <= now]:
                guest.node, guest.migrate_to, guest.lock = guest.migrate_to or guest.node, None, None
                guest.restart_io(guest.migrate_at)  # a new QEMU process on the target node
                self._migrating.remove(guest)
                self._changed()

    # -- guest actions (the POST status/* endpoints) ---------------------------------------------
    def action(self, node: str, kind: str, vmid: int, action: str, user: str) -> str:
        """Start the task for `action` on a guest and return its UPID, as Proxmox does."""
        with self.lock:
            self.tick()
            if action not in ("start", "stop", "shutdown", "reboot") and not (kind == "qemu" and action == "reset"):
                raise ApiError(501, f"Method 'POST /nodes/{node}/{kind}/{vmid}/status/{action}' not implemented")
            guest = self.guest_on(node, kind, vmid, writing=True)
            if not self.quorate:
                raise ApiError(500, "cluster not ready - no quorum?")
            now = self.clock()
            if action == "start" and guest.template:
                raise ApiError(500, "you can't start a vm if it's a template")
            if action in ("reset", "reboot", "shutdown") and not guest.running:
                raise ApiError(500, f"{guest.label} {vmid} not running")
            if action == "start" and guest.running:
                raise ApiError(500, f"{guest.label} {vmid} already running")
            prefix = "qm" if kind == "qemu" else "vz"
            task_type = f"{prefix}{action}"
            if guest.ha_managed and action in ("start", "stop"):
                task_type = f"ha{action}"
            exit_status, effect = self._outcome(guest, action, now)
            upid = make_upid(node, self._new_pid(), now, task_type, str(vmid), user)
            task = Task.create(upid, vmid, end_at=now + self.task_seconds, effect=effect, exitstatus=exit_status,
                               requested_at=now)
            self.tasks[upid] = task
            self._running.append(task)
            self._changed()
            return upid

    def _outcome(self, guest: Guest, action: str, now: float) -> tuple[str, Callable[[], None] | None]:
        """The exit status the task will end with, and what it does to the guest when it ends."""
        if guest.lock:
            return f"{guest.label} is locked ({guest.lock})", None
        if action == "reset":
            if guest.stuck:
                return f"VM {guest.vmid} qmp command 'system_reset' failed - got timeout", None
            return "OK", lambda: self._reboot_os(guest, restart_process=False)
        if action in ("reboot", "shutdown") and (guest.stuck or (guest.hung and guest.kind == "qemu")):
            return "VM quit/powerdown failed - got timeout", None
        if action == "reboot":
            return "OK", lambda: self._reboot_os(guest, restart_process=True)
        if action in ("stop", "shutdown"):
            return "OK", lambda: self._power_off(guest)
        return "OK", lambda: self._power_on(guest)

    def _reboot_os(self, guest: Guest, restart_process: bool) -> None:
        now = self.clock()
        guest.settle_io(now)
        guest.hung = False
        guest.qmpstatus = "running"
        guest.booted = now
        if restart_process:  # a reboot starts a new QEMU process (counters from 0); a reset keeps it
            guest.started, guest.pid = now, self._new_pid()
            guest.restart_io(now)

    def _power_off(self, guest: Guest) -> None:
        guest.status = guest.qmpstatus = "stopped"
        guest.hung = guest.stuck = False
        guest.pid = 0
        guest.restart_io(self.clock())

    def _power_on(self, guest: Guest) -> None:
        if guest.running:
            return
        now = self.clock()
        guest.status = guest.qmpstatus = "running"
        guest.started = guest.booted = now
        guest.pid = self._new_pid()
        guest.restart_io(now)

    # -- faults (the control API) ---------------------------------------------------------------
    def guest(self, vmid: int) -> Guest:
        guest = self.guests.get(vmid)
        if guest is None:
            raise ApiError(404, f"no guest {vmid} in the simulated cluster")
        return guest

    def set_fault(self, vmid: int, fault: str, value: Any = None) -> Guest:
        """Switch a guest fault on or off; `fault` is a control-API verb (hang, stuck, pause, lock, silence, ...)."""
        with self.lock:
            self.tick()
            guest = self.guest(vmid)
            if fault in ("hang", "stuck", "pause") and not guest.running:
                raise ApiError(409, f"guest {vmid} is stopped; start it first")
            if fault == "guest-agent":
                if guest.kind != "qemu":
                    raise ApiError(400, f"guest {vmid} is a container: it has no QEMU guest agent")
                if value not in GUEST_AGENT_STATES:
                    raise ApiError(400, f"state must be one of {', '.join(GUEST_AGENT_STATES)}, not {value!r}")
            guest.settle_io(self.clock())  # the I/O done so far, before the fault changes whether it goes on
            if fault == "hang":
                guest.hung = True
            elif fault == "stuck":
                guest.hung = guest.stuck = True
            elif fault in ("unhang", "recover"):
                guest.hung = guest.stuck = False
                guest.qmpstatus = "running" if guest.running else "stopped"
            elif fault == "pause":
                state = value or "paused"
                if state not in QMP_STATES or state == "running":
                    raise ApiError(400, f"qmpstatus must be one of {', '.join(QMP_STATES[1:])}, not {state!r}")
                guest.qmpstatus = state
            elif fault in ("silence", "agent-dead", "unsilence", "agent-alive"):
                guest.agent_silenced = fault in ("silence", "agent-dead")
            elif fault == "guest-agent":
                guest.guest_agent = value
            elif fault == "resume":
                guest.qmpstatus = "running" if guest.running else "stopped"
            elif fault == "lock":
                lock = value or "backup"
                if lock not in LOCKS:
                    raise ApiError(400, f"lock must be one of {', '.join(LOCKS)}, not {lock!r}")
                guest.lock = lock
            elif fault == "unlock":
                guest.lock = None
            elif fault == "stop":
                self._power_off(guest)
            elif fault == "start":
                self._power_on(guest)
            elif fault == "tags":
                guest.tags = str(value or "")
            else:
                raise ApiError(404, f"unknown guest fault {fault!r}")
            self._changed()
            return guest

    def migrate(self, vmid: int, target: str, seconds: float = 0.0) -> Guest:
        """Move a guest to `target`; with `seconds`, it holds the `migrate` lock that long first."""
        with self.lock:
            self.tick()
            guest = self.guest(vmid)
            if target not in self.nodes:
                raise ApiError(400, f"no node {target!r} (nodes: {', '.join(self.nodes)})")
            if target == guest.node:
                raise ApiError(400, f"guest {vmid} is already on {target}")
            if seconds > 0:
                guest.lock, guest.migrate_to, guest.migrate_at = "migrate", target, self.clock() + seconds
                self._migrating.append(guest)
            else:
                guest.node = target
                guest.restart_io(self.clock())  # a new QEMU process on the target node
            self._changed()
            return guest

    def heal_guests(self) -> None:
        """Every guest fault off: not hung or stuck, heartbeats arriving, unlocked, qmpstatus and guest agent
        running again (a guest agent that is not configured stays so: that is configuration, not a fault)."""
        with self.lock:
            now = self.clock()
            for g in self.guests.values():
                g.settle_io(now)
                g.hung = g.stuck = g.agent_silenced = False
                g.lock = None
                g.qmpstatus = "running" if g.running else "stopped"
                if g.guest_agent == "not-running":
                    g.guest_agent = "running"
            self._changed()

    def set_node_online(self, name: str, online: bool) -> Node:
        with self.lock:
            node = self.nodes.get(name)
            if node is None:
                raise ApiError(404, f"no node {name!r} (nodes: {', '.join(self.nodes)})")
            if online and not node.online:
                node.started = self.clock()
            node.online = online
            self._changed()
            return node

    def set_quorum(self, quorate: bool | None) -> None:
        """Force quorum on or off; None goes back to computing it from the online nodes."""
        with self.lock:
            self.quorum_override = quorate
            self._changed()
