"""Report this guest's health to vmhealth: push heartbeats to the exporter, serve /metrics, or both.

  vmhealth agent --config /etc/vmhealth/agent.yml     run (mode from agent.mode, default push)
  vmhealth agent --once                               print one report as JSON and exit
  vmhealth agent --check                              check configuration and reachability, explain problems

Every key can come from the environment instead of a file: VMHEALTH_AGENT_EXPORTER_URL,
VMHEALTH_AGENT_API_KEY (or VMHEALTH_AGENT_API_KEY_FILE), VMHEALTH_AGENT_VMID, VMHEALTH_AGENT_MODE, ...
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmhealth.config import AgentConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=["push", "pull", "both"], help="override agent.mode")
    parser.add_argument("--listen", metavar="HOST:PORT", help="override agent.listen (pull mode)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--once", action="store_true", help="print one report as JSON and exit")
    action.add_argument("--check", action="store_true",
                        help="check the configuration, what can be collected and whether the exporter accepts "
                        "a report; exit 1 and explain when something is wrong")


def needs_api_key(mode: str) -> bool:
    return mode in ("push", "both")


def run(args: argparse.Namespace) -> int:
    from vmhealth.subcommand import load_config_or_exit

    config = load_config_or_exit(args, ())
    agent_cfg = config.agent
    if args.mode:
        agent_cfg = replace(agent_cfg, mode=args.mode)
    if args.listen:
        from vmhealth.config import check_listen

        try:
            check_listen(args.listen)
        except ValueError as exc:
            print(f"vmhealth: --listen: {exc}", file=sys.stderr)
            return 2
        agent_cfg = replace(agent_cfg, listen=args.listen)
    if needs_api_key(agent_cfg.mode) and not agent_cfg.api_key and not args.once:
        print(f"vmhealth: agent.api_key: missing (mode {agent_cfg.mode} pushes to the exporter; set it in the "
              "file, or VMHEALTH_AGENT_API_KEY / VMHEALTH_AGENT_API_KEY_FILE)", file=sys.stderr)
        return 2

    if args.once:
        return _once(agent_cfg)
    if args.check:
        from .check import check

        return check(agent_cfg, out=sys.stdout)

    from .runner import Agent

    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        agent = Agent(agent_cfg)
    except OSError as exc:
        print(f"vmhealth: cannot start the agent: {exc}", file=sys.stderr)
        return 1
    try:
        return agent.run(stop)
    except OSError as exc:  # e.g. the listen address is taken
        print(f"vmhealth: agent.listen {agent_cfg.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _once(agent_cfg: AgentConfig) -> int:
    from .collect import Collector
    from .payload import build
    from .runner import identity_from

    collector = Collector(agent_cfg.mounts)
    time.sleep(0.5)  # so that CPU use covers a real span, not the instant since start
    print(json.dumps(build(collector.collect(), identity_from(agent_cfg)), indent=2))
    return 0
