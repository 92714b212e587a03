"""Close a guest's open incident whose resolved notification will never come (POST
/api/vms/<vmid>/close-incident with the admin token). The history keeps it as `closed:manual` with
actor `manual:<who>` and the reason; a later firing alert for the guest opens a new incident."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("vmid", type=int, help="the guest's id")
    parser.add_argument("--reason", required=True, help="why, kept in the history")
    parser.add_argument("--actor", default=None, help="who closes it (default: the login name)")
    from .client import add_url_argument

    add_url_argument(parser)


def run(args: argparse.Namespace) -> int:
    import getpass

    from .client import ask_admin

    return ask_admin(args, "close-incident", "close an incident",
                     {"reason": args.reason, "actor": args.actor or getpass.getuser()}, "not closed")
