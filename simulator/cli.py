"""Run a simulated Proxmox VE cluster over HTTPS (`vmhealth sim`), or steer a running one
(`vmhealth sim ctl ACTION ...`).

  vmhealth sim --nodes 3 --guests 30 --lxc 5 --token-id 'root@pam!sim' --token-secret S \\
      --agents-to http://127.0.0.1:9747 --agent-interval 30s --agent-key K
  vmhealth sim ctl --ca-bundle /tmp/vmhealth-sim-x/pve-root-ca.pem hang 105

QEMU guests get vmids from 100, containers follow them; guests are spread round-robin over nodes
pve1..pveN. The CA file to verify the API with is printed at start (and written to --ready-file).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

log = logging.getLogger("vmhealth.simulator")


def _credential(text: str) -> tuple[str, str]:
    name, sep, secret = text.rpartition("=")
    if not sep or not name or not secret:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=SECRET")
    return name, secret


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _duration(text: str) -> float:
    from vmhealth.durations import parse_duration

    try:
        return float(parse_duration(text))
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from . import ctl

    sub = parser.add_subparsers(dest="sim_command", metavar="{ctl}")
    ctl_parser = sub.add_parser("ctl", help="steer a running simulator (faults, request log, tasks)")
    ctl.add_arguments(ctl_parser)
    ctl_parser.set_defaults(run=ctl.run)

    shape = parser.add_argument_group("cluster")
    shape.add_argument("--nodes", type=int, default=3, help="nodes pve1..pveN (default %(default)s)")
    shape.add_argument("--guests", type=int, default=30, help="QEMU VMs (default %(default)s)")
    shape.add_argument("--lxc", type=int, default=0, help="LXC containers (default %(default)s)")
    shape.add_argument("--templates", type=int, default=0, help="QEMU templates (default %(default)s)")
    shape.add_argument("--cluster-name", default="sim", help="cluster name, also the agents' `cluster` (default sim)")
    shape.add_argument("--boot-time", type=_duration, default=5.0, metavar="DURATION",
                       help="after a (re)start, how long until the guest's agent reports again (default 5s)")
    shape.add_argument("--task-time", type=_duration, default=1.0, metavar="DURATION",
                       help="how long a start/stop/reset task runs (default 1s)")

    api = parser.add_argument_group("API")
    api.add_argument("--listen", type=_listen, default=("127.0.0.1", 8006), metavar="HOST:PORT",
                     help="HTTPS listener (default 127.0.0.1:8006; port 0 picks a free one)")
    api.add_argument("--token-id", default="root@pam!sim", help="full-privilege API token id (default root@pam!sim)")
    api.add_argument("--token-secret", default="sim-secret", help="its secret (default sim-secret)")
    api.add_argument("--token", type=_credential, action="append", default=[], metavar="ID=SECRET",
                     help="another full-privilege token (repeatable)")
    api.add_argument("--audit-token", type=_credential, action="append", default=[], metavar="ID=SECRET",
                     help="a read-only (PVEAuditor) token")
    api.add_argument("--power-token", type=_credential, action="append", default=[], metavar="ID=SECRET",
                     help="the webhook's token: VM.Audit + VM.PowerMgmt + Sys.Audit + VM.GuestAgent.Audit only")
    api.add_argument("--power-noagent-token", type=_credential, action="append", default=[], metavar="ID=SECRET",
                     help="like --power-token without VM.GuestAgent.Audit (its agent/ping gets the 403)")
    api.add_argument("--user", type=_credential, action="append", default=[], metavar="USER@REALM=PASSWORD",
                     help="a user for ticket logins (POST /access/ticket), full privileges")
    api.add_argument("--cert-dir", metavar="DIR", help="where to write the generated CA and certificate")
    api.add_argument("--cert", metavar="FILE", help="serve this certificate chain instead (with --key)")
    api.add_argument("--key", metavar="FILE")
    api.add_argument("--auth-fail-delay", type=_duration, default=0.0, metavar="DURATION",
                     help="delay 401 answers like pveproxy does (~3s there; default 0)")
    api.add_argument("--agent-ping-delay", type=_duration, default=0.0, metavar="DURATION",
                     help="how long agent/ping takes to answer 'QEMU guest agent is not running' "
                          "(Proxmox waits ~3s for the guest agent; default 0)")
    api.add_argument("--ready-file", metavar="FILE", help="write URL, CA file and tokens here as JSON once serving")

    agents = parser.add_argument_group("simulated agents")
    agents.add_argument("--agents-to", metavar="URL", help="exporter base URL to send heartbeats to (several, "
                        "comma-separated: each gets every heartbeat)")
    agents.add_argument("--agent-interval", type=_duration, default=30.0, metavar="DURATION",
                        help="heartbeat interval (default 30s)")
    agents.add_argument("--agent-key", default="", help="the exporter's api_key")
    agents.add_argument("--agent-key-mode", choices=["shared", "per-vm"], default="per-vm",
                        help="send each guest's HMAC(api_key, cluster:vmid), as vmhealth's exporter wants by default, "
                        "or the shared key (default per-vm)")
    agents.add_argument("--agent-workers", type=int, default=16, help="HTTP senders (default %(default)s)")


def options_from(args: argparse.Namespace) -> object:
    from .launch import SimOptions

    tokens = [(i, s, "full") for i, s in args.token] + [(i, s, "audit") for i, s in args.audit_token]
    tokens += [(i, s, "power") for i, s in args.power_token]
    tokens += [(i, s, "power-noagent") for i, s in args.power_noagent_token]
    return SimOptions(
        nodes=args.nodes, guests=args.guests, lxc=args.lxc, templates=args.templates, host=args.listen[0],
        port=args.listen[1], cluster_name=args.cluster_name, token_id=args.token_id, token_secret=args.token_secret,
        tokens=tokens, users=[(u, p, "full") for u, p in args.user], cert_dir=args.cert_dir, cert=args.cert,
        key=args.key, boot_seconds=args.boot_time, task_seconds=args.task_time, auth_fail_delay=args.auth_fail_delay,
        agent_ping_delay=args.agent_ping_delay,
        agents_to=args.agents_to, agent_interval=args.agent_interval, agent_key=args.agent_key,
        agent_key_mode=args.agent_key_mode, agent_workers=args.agent_workers,
    )


def run(args: argparse.Namespace) -> int:
    from vmhealth.logsetup import add_secrets

    from .launch import build

    add_secrets([s for s in (args.token_secret, args.agent_key) if s])
    try:
        sim, files = build(options_from(args))  # type: ignore[arg-type]
    except (ValueError, OSError) as exc:
        print(f"vmhealth sim: {exc}", file=sys.stderr)
        return 2
    sim.start()
    host, port = sim.address
    info = {"url": f"https://{host}:{port}", "host": f"{host}:{port}", "ca_bundle": str(files.ca),
            "token_id": args.token_id, "cluster": args.cluster_name}
    log.info("simulated cluster %r: %d nodes, %d guests at %s (CA file %s, token %s)", args.cluster_name,
             args.nodes, args.guests + args.lxc + args.templates, info["url"], files.ca, args.token_id)
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as handle:
            json.dump(info, handle)
        import os

        os.replace(args.ready_file + ".tmp", args.ready_file)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    sim.stop()
    return 0
