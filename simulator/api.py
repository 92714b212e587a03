"""The Proxmox API under /api2/json: routes, privilege checks and the real response shapes.

Shapes follow the API schema: booleans are 0/1, absent fields are left out, errors are
`{"data": null, "message": "...\\n"}`. `cluster/resources` is rendered once per state version and
second and served from that cache, so thousands of guests cost one encoding per second.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from .auth import Auth, Caller, require
from .model import GIB, ApiError, Cluster, Guest
from .tasks import parse_upid

PVE_VERSION = {"version": "9.0.10", "release": "9.0", "repoid": "deb1ca707ec72a89"}
Handler = Callable[..., Any]


class RawJson:
    """An already-encoded `data` value (from the cache)."""

    def __init__(self, encoded: bytes):
        self.encoded = encoded


def _vmid(text: str) -> int:
    try:
        vmid = int(text)
    except ValueError:
        raise ApiError(400, "Parameter verification failed.",
                       {"vmid": f"type check ('integer') failed - got '{text}'"}) from None
    if not 100 <= vmid <= 999_999_999:
        raise ApiError(400, "Parameter verification failed.", {"vmid": "value must have a minimum value of 100"})
    return vmid


def _flag(value: bool) -> int:
    return 1 if value else 0


class Api:
    """Answers one API request: `handle(identity, method, path, query, body)` -> data or ApiError."""

    def __init__(self, cluster: Cluster, auth: Auth):
        self.cluster = cluster
        self.auth = auth
        self._cache: dict[tuple[Any, ...], bytes] = {}
        self._cache_lock = threading.Lock()
        g = r"(?P<kind>qemu|lxc)/(?P<vmid>[^/]+)"
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = [
            (m, re.compile(f"^{p}$"), h) for m, p, h in [
                ("GET", r"version", self.version),
                ("GET", r"cluster/resources", self.resources),
                ("GET", r"cluster/status", self.cluster_status),
                ("GET", r"cluster/tasks", self.cluster_tasks),
                ("GET", r"cluster/backup-info/not-backed-up", self.not_backed_up),
                ("GET", r"cluster/config/qdevice", self.qdevice),
                ("GET", r"cluster/ha/status/current", self.ha_status),
                ("GET", r"cluster/ha/resources", self.ha_resources),
                ("GET", r"access/permissions", self.permissions),
                ("GET", r"nodes", self.nodes),
                ("GET", r"nodes/(?P<node>[^/]+)/status", self.node_status),
                ("GET", r"nodes/(?P<node>[^/]+)/subscription", self.subscription),
                ("GET", r"nodes/(?P<node>[^/]+)/replication", self.replication),
                ("GET", r"nodes/(?P<node>[^/]+)/replication/(?P<job>[^/]+)/status", self.replication_status),
                ("GET", r"nodes/(?P<node>[^/]+)/(?P<kind>qemu|lxc)", self.guest_list),
                ("GET", rf"nodes/(?P<node>[^/]+)/{g}/status/current", self.guest_status),
                ("GET", rf"nodes/(?P<node>[^/]+)/{g}/config", self.guest_config),
                ("POST", rf"nodes/(?P<node>[^/]+)/{g}/status/(?P<action>[a-z]+)", self.guest_action),
                ("POST", r"nodes/(?P<node>[^/]+)/qemu/(?P<vmid>[^/]+)/agent/ping", self.agent_ping),
                ("GET", r"nodes/(?P<node>[^/]+)/tasks", self.node_tasks),
                ("GET", r"nodes/(?P<node>[^/]+)/tasks/(?P<upid>[^/]+)/status", self.task_status),
                ("GET", r"nodes/(?P<node>[^/]+)/tasks/(?P<upid>[^/]+)/log", self.task_log),
            ]
        ]

    def handle(self, identity: Caller, method: str, path: str, query: dict[str, str], body: dict[str, Any]) -> Any:
        for route_method, pattern, handler in self.routes:
            match = pattern.match(path)
            if match and route_method == method:
                self.cluster.tick()
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                with self.cluster.lock:
                    return handler(identity, query=query, body=body, **params)
        raise ApiError(501, f"Method '{method} /{path}' not implemented")

    # -- cluster --------------------------------------------------------------------------------
    def version(self, identity: Caller, **_: Any) -> Any:
        return {**PVE_VERSION, "console": "html5"}

    def resources(self, identity: Caller, query: dict[str, str], **_: Any) -> Any:
        kind = query.get("type")
        if kind not in (None, "", "vm", "node", "storage", "sdn"):
            problem = f"value '{kind}' does not have a value in the enumeration 'vm, storage, node, sdn'"
            raise ApiError(400, "Parameter verification failed.", {"type": problem})
        sees_vms = "VM.Audit" in identity.privileges
        sees_nodes = "Sys.Audit" in identity.privileges
        now = self.cluster.now()
        key = (kind or "", sees_vms, sees_nodes, self.cluster.version, int(now))
        with self._cache_lock:  # one renderer at a time: concurrent misses wait for it, then hit
            cached = self._cache.get(key)
            if cached is None:
                cached = self._render_resources(kind, sees_vms, sees_nodes, now)
                self._cache = {k: v for k, v in self._cache.items() if k[3:] == key[3:]}  # same version and second
                self._cache[key] = cached
        return RawJson(cached)

    def _render_resources(self, kind: str | None, sees_vms: bool, sees_nodes: bool, now: float) -> bytes:
        items: list[dict[str, Any]] = []
        if kind in (None, "", "node"):
            items += [self._node_resource(n, now, sees_nodes) for n in self.cluster.nodes.values()]
        if kind in (None, "", "vm") and sees_vms:
            items += [self._guest_resource(g, now) for g in self.cluster.guests.values()]
        if kind in (None, "", "storage"):
            items += self._storage_resources()
        return json.dumps(items, separators=(",", ":")).encode()

    def _node_resource(self, node: Any, now: float, detail: bool) -> dict[str, Any]:
        item: dict[str, Any] = {"id": f"node/{node.name}", "type": "node", "node": node.name,
                                "status": "online" if node.online else "offline"}
        if node.online and detail:
            item.update(self._node_stats(node, now))
            item.update({"level": "", "cgroup-mode": 2})
        return item

    def _node_stats(self, node: Any, now: float) -> dict[str, Any]:
        guests = [g for g in self.cluster.guests.values() if g.node == node.name and g.running]
        return {
            "cpu": round(min(1.0, sum(g.cpu(now) * g.cpus for g in guests) / node.maxcpu), 4),
            "maxcpu": node.maxcpu, "mem": min(node.maxmem, 4 * GIB + sum(g.mem(now) for g in guests)),
            "maxmem": node.maxmem, "disk": 12 * GIB, "maxdisk": 100 * GIB, "uptime": int(now - node.started),
        }

    def _guest_resource(self, g: Guest, now: float) -> dict[str, Any]:
        online = self.cluster.nodes[g.node].online
        item: dict[str, Any] = {
            "id": f"{g.kind}/{g.vmid}", "type": g.kind, "vmid": g.vmid, "name": g.name, "node": g.node,
            "status": g.status if online else "unknown", "template": _flag(g.template),
            "maxcpu": g.cpus, "maxmem": g.maxmem, "maxdisk": g.maxdisk,
        }
        if online:
            diskread, diskwrite, netin, netout = g.counters(now)
            item.update({
                "cpu": g.cpu(now), "mem": g.mem(now), "disk": g.disk_used() if g.kind == "lxc" and g.running else 0,
                "uptime": g.uptime(now), "netin": netin, "netout": netout, "diskread": diskread,
                "diskwrite": diskwrite,
            })
            if g.kind == "qemu":
                item["memhost"] = item["mem"]
        if g.tags:
            item["tags"] = g.tags
        if g.lock:
            item["lock"] = g.lock
        if g.ha_managed:
            item["hastate"] = "started" if g.running else "stopped"
        return item

    def _storage_resources(self) -> list[dict[str, Any]]:
        items = []
        for node in self.cluster.nodes.values():
            for storage, plugin, content in (("local", "dir", "iso,vztmpl,backup"), ("local-lvm", "lvmthin",
                                                                                      "rootdir,images")):
                item: dict[str, Any] = {"id": f"storage/{node.name}/{storage}", "type": "storage",
                                        "storage": storage, "node": node.name, "plugintype": plugin,
                                        "content": content, "shared": 0,
                                        "status": "available" if node.online else "unknown"}
                if node.online:
                    item.update({"disk": 40 * GIB, "maxdisk": 400 * GIB})
                items.append(item)
        return items

    def cluster_status(self, identity: Caller, **_: Any) -> Any:
        require(identity, "/", "Sys.Audit")
        first = next(iter(self.cluster.nodes))
        items: list[dict[str, Any]] = [{
            "id": "cluster", "type": "cluster", "name": self.cluster.name, "nodes": len(self.cluster.nodes),
            "quorate": _flag(self.cluster.quorate), "version": len(self.cluster.nodes),
        }]
        for node in self.cluster.nodes.values():
            items.append({"id": f"node/{node.name}", "type": "node", "name": node.name, "nodeid": node.nodeid,
                          "ip": node.ip, "online": _flag(node.online), "local": _flag(node.name == first),
                          "level": ""})
        return items

    def cluster_tasks(self, identity: Caller, **_: Any) -> Any:
        tasks = [t for t in self.cluster.tasks.values() if self._may_see_task(identity, t.user)]
        return [t.list_json() for t in sorted(tasks, key=lambda t: -t.fields["starttime"])][:1000]

    def not_backed_up(self, identity: Caller, **_: Any) -> Any:
        require(identity, "/", "Sys.Audit")
        return [{"vmid": g.vmid, "type": g.kind, "name": g.name}
                for g in self.cluster.guests.values() if not g.template]

    def qdevice(self, identity: Caller, **_: Any) -> Any:
        require(identity, "/", "Sys.Audit")
        return {}  # no QDevice configured

    def ha_status(self, identity: Caller, **_: Any) -> Any:
        require(identity, "/", "Sys.Audit")
        first = next(iter(self.cluster.nodes))
        items: list[dict[str, Any]] = [
            {"id": "quorum", "type": "quorum", "node": first, "quorate": _flag(self.cluster.quorate),
             "status": "OK" if self.cluster.quorate else "No quorum on node '" + first + "'!"},
            {"id": "master", "type": "master", "node": first, "status": f"{first} (active, {int(self.cluster.now())})"},
        ]
        for g in self.cluster.guests.values():
            if g.ha_managed:
                sid = f"{'vm' if g.kind == 'qemu' else 'ct'}:{g.vmid}"
                state = "started" if g.running else "stopped"
                items.append({"id": f"service:{sid}", "sid": sid, "type": "service", "node": g.node,
                              "state": state, "request_state": state, "crm_state": state,
                              "status": f"{sid} ({g.node}, {state})", "max_relocate": 1, "max_restart": 1})
        return items

    def ha_resources(self, identity: Caller, **_: Any) -> Any:
        return [{"sid": f"{'vm' if g.kind == 'qemu' else 'ct'}:{g.vmid}", "type": "vm" if g.kind == "qemu" else "ct",
                 "state": "started", "max_restart": 1, "max_relocate": 1,
                 "digest": hashlib.sha1(str(g.vmid).encode(), usedforsecurity=False).hexdigest()}
                for g in self.cluster.guests.values() if g.ha_managed and "VM.Audit" in identity.privileges]

    def permissions(self, identity: Caller, **_: Any) -> Any:
        privs = {p: 1 for p in sorted(identity.privileges)}
        return {"/": privs, "/vms": privs, "/nodes": privs}

    # -- nodes ----------------------------------------------------------------------------------
    def nodes(self, identity: Caller, **_: Any) -> Any:
        now = self.cluster.now()
        items = []
        for node in self.cluster.nodes.values():
            item: dict[str, Any] = {"node": node.name, "id": f"node/{node.name}", "type": "node",
                                    "status": "online" if node.online else "offline"}
            if node.online and "Sys.Audit" in identity.privileges:
                stats = self._node_stats(node, now)
                item.update({k: stats[k] for k in ("cpu", "maxcpu", "mem", "maxmem", "disk", "maxdisk", "uptime")})
                item["level"] = ""
                item["ssl_fingerprint"] = ":".join(f"{b:02X}" for b in hashlib.sha256(node.name.encode()).digest())
            items.append(item)
        return items

    def node_status(self, identity: Caller, node: str, **_: Any) -> Any:
        require(identity, f"/nodes/{node}", "Sys.Audit")
        n = self.cluster.reachable_node(node)
        stats = self._node_stats(n, self.cluster.now())
        return {
            "uptime": stats["uptime"], "cpu": stats["cpu"], "wait": 0.001, "idle": 0,
            "loadavg": ["0.52", "0.61", "0.66"], "kversion": "Linux 6.14.8-2-pve #1 SMP PREEMPT_DYNAMIC",
            "pveversion": f"pve-manager/{PVE_VERSION['version']}/{PVE_VERSION['repoid']}",
            "memory": {"total": stats["maxmem"], "used": stats["mem"], "free": stats["maxmem"] - stats["mem"],
                       "available": stats["maxmem"] - stats["mem"]},
            "swap": {"total": 8 * GIB, "used": 0, "free": 8 * GIB},
            "rootfs": {"total": stats["maxdisk"], "used": stats["disk"], "free": stats["maxdisk"] - stats["disk"],
                       "avail": stats["maxdisk"] - stats["disk"]},
            "cpuinfo": {"model": "Simulated CPU", "cpus": n.maxcpu, "cores": n.maxcpu // 2, "sockets": 1,
                        "mhz": "2800.000", "hvm": "1", "user_hz": 100, "flags": "fpu vme sse2 vmx"},
            "ksm": {"shared": 0}, "boot-info": {"mode": "efi", "secureboot": 0},
            "current-kernel": {"sysname": "Linux", "release": "6.14.8-2-pve", "machine": "x86_64",
                               "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.14.8-2"},
        }

    def subscription(self, identity: Caller, node: str, **_: Any) -> Any:
        self.cluster.reachable_node(node)
        return {"status": "notfound", "message": "There is no subscription key", "serverid": hashlib.md5(
            node.encode(), usedforsecurity=False).hexdigest().upper(), "url": "https://www.proxmox.com/en/proxmox-virtual-environment/pricing"}

    def replication(self, identity: Caller, node: str, **_: Any) -> Any:
        self.cluster.reachable_node(node)
        return []  # no replication jobs

    def replication_status(self, identity: Caller, node: str, job: str, **_: Any) -> Any:
        self.cluster.reachable_node(node)
        raise ApiError(500, f"replication job '{job}' does not exist")

    # -- guests ---------------------------------------------------------------------------------
    def guest_list(self, identity: Caller, node: str, kind: str, **_: Any) -> Any:
        self.cluster.reachable_node(node)
        if "VM.Audit" not in identity.privileges:
            return []
        now = self.cluster.now()
        return [self._guest_summary(g, now) for g in self.cluster.guests.values() if g.node == node and g.kind == kind]

    def _guest_summary(self, g: Guest, now: float) -> dict[str, Any]:
        diskread, diskwrite, netin, netout = g.counters(now)
        item: dict[str, Any] = {
            "vmid": g.vmid, "name": g.name, "status": g.status, "cpu": g.cpu(now), "cpus": g.cpus,
            "mem": g.mem(now), "maxmem": g.maxmem, "disk": g.disk_used() if g.kind == "lxc" and g.running else 0,
            "maxdisk": g.maxdisk, "uptime": g.uptime(now), "netin": netin, "netout": netout,
            "diskread": diskread, "diskwrite": diskwrite,
        }
        if g.kind == "lxc":
            item["type"] = "lxc"
            item.update({"swap": 0, "maxswap": 512 * 1024**2})
        else:
            item["memhost"] = item["mem"]
            item["serial"] = 0
        if g.running:
            item["pid"] = g.pid
        if g.template:
            item["template"] = 1
        if g.tags:
            item["tags"] = g.tags
        if g.lock:
            item["lock"] = g.lock
        return item

    def guest_status(self, identity: Caller, node: str, kind: str, vmid: str, **_: Any) -> Any:
        number = _vmid(vmid)
        require(identity, f"/vms/{number}", "VM.Audit")
        g = self.cluster.guest_on(node, kind, number)
        item = self._guest_summary(g, self.cluster.now())
        item.pop("serial", None)
        item["ha"] = {"managed": 1, "state": "started" if g.running else "stopped"} if g.ha_managed else {"managed": 0}
        if kind == "qemu":
            item["qmpstatus"] = g.qmpstatus
            if g.guest_agent != "none":  # "QEMU Guest Agent is enabled in config"; left out when it is not
                item["agent"] = 1
            item["clipboard"] = None
            if g.running:
                item.update({"running-qemu": "10.0.2", "running-machine": "pc-q35-10.0+pve1"})
        return item

    def guest_config(self, identity: Caller, node: str, kind: str, vmid: str, **_: Any) -> Any:
        number = _vmid(vmid)
        require(identity, f"/vms/{number}", "VM.Audit")
        g = self.cluster.guest_on(node, kind, number)
        mac = hashlib.sha256(f"mac{g.vmid}".encode()).hexdigest()
        mac = "BC:24:11:" + ":".join(mac[i:i + 2] for i in (0, 2, 4)).upper()
        size = f"{g.maxdisk // GIB}G"
        if kind == "qemu":
            config: dict[str, Any] = {
                "name": g.name, "memory": str(g.maxmem // 1024**2), "cores": g.cpus, "sockets": 1,
                "cpu": "x86-64-v2-AES", "ostype": "l26", "boot": "order=scsi0;net0",
                "scsihw": "virtio-scsi-single", "scsi0": f"local-lvm:vm-{g.vmid}-disk-0,iothread=1,size={size}",
                "net0": f"virtio={mac},bridge=vmbr0,firewall=1", "smbios1": f"uuid={g.uuid}",
                "vmgenid": str(g.uuid[::-1]), "onboot": 1,
            }
            if g.guest_agent != "none":
                config["agent"] = "1"
        else:
            config = {
                "hostname": g.name, "memory": g.maxmem // 1024**2, "swap": 512, "cores": g.cpus, "ostype": "debian",
                "arch": "amd64", "rootfs": f"local-lvm:vm-{g.vmid}-disk-0,size={size}", "unprivileged": 1,
                "net0": f"name=eth0,bridge=vmbr0,hwaddr={mac},ip=dhcp,type=veth", "onboot": 1,
            }
        if g.tags:
            config["tags"] = g.tags
        if g.lock:
            config["lock"] = g.lock
        if g.template:
            config["template"] = 1
        config["digest"] = hashlib.sha1(json.dumps(config, sort_keys=True).encode(), usedforsecurity=False).hexdigest()
        return config

    def guest_action(self, identity: Caller, node: str, kind: str, vmid: str, action: str, **_: Any) -> Any:
        number = _vmid(vmid)
        if action not in ("start", "stop", "shutdown", "reboot", "reset", "suspend", "resume"):
            raise ApiError(501, f"Method 'POST /nodes/{node}/{kind}/{vmid}/status/{action}' not implemented")
        if action == "reset" and kind == "lxc":
            raise ApiError(501, f"Method 'POST /nodes/{node}/{kind}/{vmid}/status/{action}' not implemented")
        require(identity, f"/vms/{number}", "VM.PowerMgmt")
        if action in ("suspend", "resume"):
            raise ApiError(501, f"Method 'POST /nodes/{node}/{kind}/{vmid}/status/{action}' not implemented")
        return self.cluster.action(node, kind, number, action, identity.userid)

    def agent_ping(self, identity: Caller, node: str, vmid: str, **_: Any) -> Any:
        number = _vmid(vmid)
        require(identity, f"/vms/{number}", "VM.GuestAgent.Audit", "VM.GuestAgent.Unrestricted")
        return self.cluster.ping_guest_agent(node, number)

    # -- tasks ----------------------------------------------------------------------------------
    def _may_see_task(self, identity: Caller, task_user: str) -> bool:
        return "Sys.Audit" in identity.privileges or task_user == identity.userid

    def node_tasks(self, identity: Caller, node: str, query: dict[str, str], **_: Any) -> Any:
        self.cluster.reachable_node(node)
        try:
            limit = int(query.get("limit", 50))
            start = int(query.get("start", 0))
            vmid = int(query["vmid"]) if query.get("vmid") else None
            since = int(query.get("since", 0))
            until = int(query["until"]) if query.get("until") else None
        except ValueError as exc:
            raise ApiError(400, "Parameter verification failed.", {"limit": f"type check failed - {exc}"}) from None
        source = query.get("source", "archive")
        errors_only = query.get("errors") in ("1", "true")
        typefilter, userfilter = query.get("typefilter"), query.get("userfilter")
        picked = []
        for t in sorted(self.cluster.tasks.values(), key=lambda t: -t.fields["starttime"]):
            if t.node != node or not self._may_see_task(identity, t.user):
                continue
            if (source == "archive" and t.running) or (source == "active" and not t.running):
                continue
            if vmid is not None and t.vmid != vmid:
                continue
            if typefilter and t.fields["type"] != typefilter:
                continue
            if userfilter and userfilter not in t.user:
                continue
            if errors_only and (t.running or t.exitstatus_when_done == "OK"):
                continue
            if t.fields["starttime"] < since or (until is not None and t.fields["starttime"] > until):
                continue
            picked.append(t.list_json())
        return picked[start:start + limit] if limit else picked[start:]

    def _task(self, identity: Caller, node: str, upid: str) -> Any:
        self.cluster.reachable_node(node)
        fields = parse_upid(upid)
        if fields is None:
            raise ApiError(400, "Parameter verification failed.", {"upid": f"unable to parse worker upid '{upid}'"})
        task = self.cluster.tasks.get(upid)
        if task is None or task.node != node:
            raise ApiError(500, f"task '{upid}' does not exist")
        if not self._may_see_task(identity, task.user):
            raise ApiError(403, f"Permission check failed (/nodes/{node}, Sys.Audit)")
        return task

    def task_status(self, identity: Caller, node: str, upid: str, **_: Any) -> Any:
        return self._task(identity, node, upid).status_json()

    def task_log(self, identity: Caller, node: str, upid: str, **_: Any) -> Any:
        task = self._task(identity, node, upid)
        lines = [] if task.running else (
            ["TASK OK"] if task.exitstatus_when_done == "OK" else [f"TASK ERROR: {task.exitstatus_when_done}"])
        return [{"n": i + 1, "t": line} for i, line in enumerate(lines)]
