"""`vmhealth sim ctl ...` and `SimControl`: a small client for the control API (standard library only)."""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any

from .model import GUEST_AGENT_STATES

HELP_EPILOG = """\
three faults that look alike from outside, and what each one does:
  hang VMID         the guest is frozen. Proxmox still shows it running (qmpstatus running, one
                    vCPU busy), but nothing comes out of it: no heartbeats, no disk or network I/O
                    (diskread/diskwrite/netin/netout stop growing) and no answer from the QEMU guest
                    agent (agent/ping: "QEMU guest agent is not running"). vmhealth should reset it.
                    `recover` (or a reset) ends it; the counters go on from where they stopped.
  agent-dead VMID   only vmhealth's in-guest agent died (the same fault as `silence`): heartbeats stop,
                    but the guest lives, its I/O counters keep growing and agent/ping answers.
                    vmhealth should warn (VMAgentSilent), never reset. `agent-alive` ends it.
  guest-agent VMID none|running|not-running
                    the QEMU guest agent (qemu-ga), not vmhealth's agent: not configured in the VM
                    config (agent/ping: "No QEMU guest agent configured"), answering (the default for
                    QEMU guests), or configured but its service down ("QEMU guest agent is not
                    running", after the simulator's --agent-ping-delay). Heartbeats and I/O go on.
"""


class ControlError(Exception):
    """The control API refused a request (its message says why) or could not be reached."""


class SimControl:
    """Calls /_sim/ on a running simulator; `ca_bundle=None` skips certificate checks."""

    def __init__(self, base_url: str, ca_bundle: str | None = None, timeout: float = 10.0):
        self.url = base_url.rstrip("/")
        self.timeout = timeout
        try:
            if ca_bundle:
                self.context = ssl.create_default_context(cafile=ca_bundle)
            else:
                self.context = ssl._create_unverified_context()
        except (OSError, ssl.SSLError) as exc:
            raise ControlError(f"cannot use {ca_bundle} as the CA bundle: {exc}") from None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body or {}).encode() if method != "GET" else None
        request = urllib.request.Request(f"{self.url}/_sim/{path.lstrip('/')}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise ControlError(f"{method} /_sim/{path}: {exc.code} {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ControlError(f"simulator at {self.url} not reachable: {exc}") from None

    # One method per control endpoint.
    def state(self) -> Any:
        return self.call("GET", "state")

    def guest(self, vmid: int) -> Any:
        return self.call("GET", f"guests/{vmid}")

    def guest_action(self, vmid: int, verb: str, **body: Any) -> Any:
        return self.call("POST", f"guests/{vmid}/{verb}", body)

    def hang(self, vmid: int) -> Any:
        return self.guest_action(vmid, "hang")

    def stuck(self, vmid: int) -> Any:
        return self.guest_action(vmid, "stuck")

    def recover(self, vmid: int) -> Any:
        return self.guest_action(vmid, "recover")

    def pause(self, vmid: int, qmpstatus: str = "paused") -> Any:
        return self.guest_action(vmid, "pause", qmpstatus=qmpstatus)

    def resume(self, vmid: int) -> Any:
        return self.guest_action(vmid, "resume")

    def lock(self, vmid: int, lock: str = "backup") -> Any:
        return self.guest_action(vmid, "lock", lock=lock)

    def unlock(self, vmid: int) -> Any:
        return self.guest_action(vmid, "unlock")

    def stop_guest(self, vmid: int) -> Any:
        return self.guest_action(vmid, "stop")

    def start_guest(self, vmid: int) -> Any:
        return self.guest_action(vmid, "start")

    def silence(self, vmid: int) -> Any:
        """The guest stays healthy but its heartbeats stop reaching the exporter (a broken monitoring path)."""
        return self.guest_action(vmid, "silence")

    def unsilence(self, vmid: int) -> Any:
        return self.guest_action(vmid, "unsilence")

    def agent_dead(self, vmid: int) -> Any:
        """vmhealth's agent in the guest dies, the guest lives (I/O and the guest-agent ping go on): `silence`."""
        return self.guest_action(vmid, "agent-dead")

    def agent_alive(self, vmid: int) -> Any:
        return self.guest_action(vmid, "agent-alive")

    def set_guest_agent(self, vmid: int, state: str) -> Any:
        """The QEMU guest agent of a VM: "none" (not configured), "running" or "not-running" (service down)."""
        return self.guest_action(vmid, "guest-agent", state=state)

    def set_tags(self, vmid: int, tags: str) -> Any:
        return self.guest_action(vmid, "tags", tags=tags)

    def migrate(self, vmid: int, node: str, seconds: float = 0) -> Any:
        return self.guest_action(vmid, "migrate", node=node, seconds=seconds)

    def node_offline(self, node: str) -> Any:
        return self.call("POST", f"nodes/{node}/offline")

    def node_online(self, node: str) -> Any:
        return self.call("POST", f"nodes/{node}/online")

    def quorum(self, quorate: bool | None) -> Any:
        return self.call("POST", "quorum", {"quorate": quorate})

    def api_down(self, status: int = 500, method: str | None = None) -> Any:
        """Every API call (or only those of `method`: GET or POST) answers `status`."""
        return self.call("POST", "api", {"down": True, "status": status, "method": method})

    def api_up(self) -> Any:
        return self.call("POST", "api", {"down": False})

    def latency(self, seconds: float, method: str | None = None) -> Any:
        """Delay every API call (or only those of `method`) by `seconds` before it is carried out."""
        return self.call("POST", "latency", {"seconds": seconds, "method": method})

    def revoke_power(self) -> Any:
        return self.call("POST", "privileges", {"power": False})

    def restore_power(self) -> Any:
        return self.call("POST", "privileges", {"power": True})

    def revoke_audit(self) -> Any:
        return self.call("POST", "privileges", {"audit": False})

    def restore_audit(self) -> Any:
        return self.call("POST", "privileges", {"audit": True})

    def heal(self) -> Any:
        return self.call("POST", "heal")

    def requests(self, recent: int = 100) -> Any:
        return self.call("GET", f"requests?recent={recent}")

    def request_counts(self, with_query: bool = False) -> dict[str, int]:
        snapshot = self.requests(recent=0)
        return snapshot["counts_with_query" if with_query else "counts"]

    def clear_requests(self) -> Any:
        return self.call("DELETE", "requests")

    def tasks(self, vmid: int | None = None) -> list[dict[str, Any]]:
        return self.call("GET", f"tasks?vmid={vmid}" if vmid is not None else "tasks")

    def resets(self, vmid: int | None = None) -> list[dict[str, Any]]:
        """The reset/reboot tasks the simulator received (what remediation did)."""
        return [t for t in self.tasks(vmid) if t["type"] in ("qmreset", "qmreboot", "vzreboot")]

    def agents(self) -> Any:
        return self.call("GET", "agents")


# name -> (help, extra positional arguments, how to call)
_CTL: dict[str, tuple[str, list[str], Any]] = {
    "state": ("show the cluster state and the faults switched on", [], lambda c, a: c.state()),
    "guest": ("show one guest", ["vmid"], lambda c, a: c.guest(a.vmid)),
    "hang": ("freeze the guest: running in Proxmox, but no heartbeats, no I/O, no guest-agent answer", ["vmid"],
             lambda c, a: c.hang(a.vmid)),
    "stuck": ("hang the guest and make resets fail with the QMP timeout", ["vmid"], lambda c, a: c.stuck(a.vmid)),
    "recover": ("end hang/stuck", ["vmid"], lambda c, a: c.recover(a.vmid)),
    "pause": ("set qmpstatus (paused, io-error, ...)", ["vmid", "qmpstatus?"],
              lambda c, a: c.pause(a.vmid, a.qmpstatus or "paused")),
    "resume": ("qmpstatus back to running", ["vmid"], lambda c, a: c.resume(a.vmid)),
    "lock": ("set a config lock (backup, migrate, snapshot, ...)", ["vmid", "lock?"],
             lambda c, a: c.lock(a.vmid, a.lock or "backup")),
    "unlock": ("remove the config lock", ["vmid"], lambda c, a: c.unlock(a.vmid)),
    "stop": ("power the guest off", ["vmid"], lambda c, a: c.stop_guest(a.vmid)),
    "start": ("power the guest on", ["vmid"], lambda c, a: c.start_guest(a.vmid)),
    "silence": ("the guest is fine but its agent's heartbeats stop arriving", ["vmid"],
                lambda c, a: c.silence(a.vmid)),
    "unsilence": ("the agent's heartbeats arrive again", ["vmid"], lambda c, a: c.unsilence(a.vmid)),
    "agent-dead": ("vmhealth's agent dies, the guest lives: no heartbeats, I/O and guest-agent ping go on "
                   "(= silence)", ["vmid"], lambda c, a: c.agent_dead(a.vmid)),
    "agent-alive": ("the agent's heartbeats arrive again (= unsilence)", ["vmid"], lambda c, a: c.agent_alive(a.vmid)),
    "guest-agent": ("set the QEMU guest agent: none (not configured), running, not-running (service down)",
                    ["vmid", "state"], lambda c, a: c.set_guest_agent(a.vmid, a.state)),
    "tags": ("set the guest's Proxmox tags (a;b)", ["vmid", "tags"], lambda c, a: c.set_tags(a.vmid, a.tags)),
    "migrate": ("move the guest to NODE", ["vmid", "node"], lambda c, a: c.migrate(a.vmid, a.node)),
    "node-offline": ("take a node offline", ["node"], lambda c, a: c.node_offline(a.node)),
    "node-online": ("bring a node back", ["node"], lambda c, a: c.node_online(a.node)),
    "quorum": ("lost | ok | auto", ["quorum"],
               lambda c, a: c.quorum({"lost": False, "ok": True, "auto": None}[a.quorum])),
    "api-down": ("every API call answers 500", [], lambda c, a: c.api_down()),
    "api-up": ("the API answers again", [], lambda c, a: c.api_up()),
    "latency": ("add SECONDS to every API call", ["seconds"], lambda c, a: c.latency(float(a.seconds))),
    "revoke-power": ("take VM.PowerMgmt from every token", [], lambda c, a: c.revoke_power()),
    "restore-power": ("give VM.PowerMgmt back", [], lambda c, a: c.restore_power()),
    "revoke-audit": ("take Sys.Audit and VM.Audit from every token (an ACL removed)", [],
                     lambda c, a: c.revoke_audit()),
    "restore-audit": ("give the audit privileges back", [], lambda c, a: c.restore_audit()),
    "heal": ("switch every fault off", [], lambda c, a: c.heal()),
    "requests": ("API calls per path", [], lambda c, a: c.requests()),
    "clear-requests": ("empty the request log", [], lambda c, a: c.clear_requests()),
    "tasks": ("tasks the simulator ran", [], lambda c, a: c.tasks()),
    "agents": ("simulated agents' statistics", [], lambda c, a: c.agents()),
}


_CHOICES = {"quorum": ["lost", "ok", "auto"], "state": list(GUEST_AGENT_STATES)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = HELP_EPILOG
    parser.add_argument("--url", default="https://127.0.0.1:8006", help="the simulator (default %(default)s)")
    parser.add_argument("--ca-bundle", metavar="FILE", help="the simulator's CA file (default: do not verify)")
    verbs = parser.add_subparsers(dest="verb", metavar="ACTION", required=True)
    for name, (help_text, positionals, _) in _CTL.items():
        sub = verbs.add_parser(name, help=help_text)
        for positional in positionals:
            optional = positional.endswith("?")
            name_ = positional.rstrip("?")
            kind = int if name_ == "vmid" else str
            sub.add_argument(name_, type=kind, nargs="?" if optional else None,
                             choices=_CHOICES.get(name_))


def run(args: argparse.Namespace) -> int:
    try:
        client = SimControl(args.url, args.ca_bundle)
        result = _CTL[args.verb][2](client, args)
    except ControlError as exc:
        print(f"vmhealth sim ctl: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0
