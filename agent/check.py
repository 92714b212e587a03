"""`vmhealth agent --check`: one pass over everything that can stop a guest from reporting, each explained.

It reads every part once, resolves the identity, and — in push mode — sends one real report, so a
wrong key, an untrusted certificate or an exporter that does not know the guest shows up here with
the exporter's own reason; in pull mode it checks that the listen address can be bound.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TextIO

from vmhealth.config import AgentConfig, split_listen

from .collect import Collector
from .payload import build
from .push import HINTS
from .runner import effective_timeout, identity_from, pushers_from


def check(agent_cfg: AgentConfig, out: TextIO) -> int:
    """Each check's line on `out`; 1 when one found a problem. The agent's own log is quiet meanwhile."""
    quiet = logging.getLogger("vmhealth.agent")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the lines below say it all, once
    try:
        return _check(agent_cfg, out)
    finally:
        quiet.setLevel(level)


def _check(agent_cfg: AgentConfig, out: TextIO) -> int:
    """Print one `ok`/`PROBLEM` line per check; 0 when all passed, 1 otherwise."""
    problems = 0

    def line(ok: bool, what: str) -> None:
        nonlocal problems
        problems += not ok
        print(f"{'ok     ' if ok else 'PROBLEM'} {what}", file=out)

    collector = Collector(agent_cfg.mounts)
    time.sleep(0.2)
    sample = collector.collect()
    line(not sample.failed, "collection: " + ("every part read" if not sample.failed else
                                              "could not read " + ", ".join(sample.failed)))
    identity = identity_from(agent_cfg)
    if identity.vmid is not None:
        line(True, f"identity: vmid {identity.vmid}" + (f", SMBIOS UUID {identity.uuid}" if identity.uuid else ""))
    elif identity.uuid:
        line(True, f"identity: SMBIOS UUID {identity.uuid} (the exporter maps it to the vmid)")
    else:
        line(False, "identity: no vmid and no readable SMBIOS UUID; set agent.vmid, or agent.uuid, "
             "or run as root / read the copy in /run/vmhealth-agent/product_uuid")

    if agent_cfg.mode in ("push", "both"):
        interval = float(agent_cfg.interval)
        if float(agent_cfg.timeout) >= interval:
            line(True, f"timeout {agent_cfg.timeout:g}s is not below interval {interval:g}s; "
                 f"{effective_timeout(float(agent_cfg.timeout), interval):g}s is used")
        report = build(sample, identity)
        for pusher in pushers_from(agent_cfg):  # every exporter of the list: each must take the report
            outcome = pusher.send(report)
            if outcome.ok:
                line(True, f"exporter {pusher.url} accepted a report")
            else:
                hint = HINTS.get(outcome.status or 0, "")
                reason = f"HTTP {outcome.status}" if outcome.status else outcome.state
                line(False, f"exporter {pusher.url}: {reason}: {outcome.detail}" + (f" — {hint}" if hint else ""))
    if agent_cfg.mode in ("pull", "both"):
        host, port = split_listen(agent_cfg.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
            line(True, f"listen {agent_cfg.listen}: free to serve /metrics")
        except OSError as exc:
            line(False, f"listen {agent_cfg.listen}: {exc.strerror or exc} (is another agent running?)")
    print(f"{'all checks passed' if not problems else f'{problems} problem(s)'}", file=out)
    return 0 if not problems else 1
