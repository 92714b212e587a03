"""Reset a guest now, through the running webhook's policy (POST /api/vms/<vmid>/reset with the admin
token). Refusals print their reason, e.g. `skipped:locked: lock=backup`; --force lifts only the
attempt limit and a quarantine."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("vmid", type=int, help="the guest's id")
    parser.add_argument("--reason", default="Manual reset from the command line", help="kept in the history")
    parser.add_argument("--force", action="store_true", help="reset even after the attempts ran out")
    parser.add_argument("--actor", default=None, help="who asks (default: the login name)")
    from .client import add_url_argument

    add_url_argument(parser)


def run(args: argparse.Namespace) -> int:
    import getpass

    from .client import ask_admin

    return ask_admin(args, "reset", "ask for a reset",
                     {"reason": args.reason, "force": args.force, "actor": args.actor or getpass.getuser()},
                     "not reset", lambda reply: f"{reply.get('message')} (attempt {reply.get('resetAttempts')})")
