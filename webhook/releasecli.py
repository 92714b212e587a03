"""End a guest's quarantine after its reset attempts ran out (POST /api/vms/<vmid>/release with the
admin token): its incident closes and attempts start again from zero."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("vmid", type=int, help="the guest's id")
    from .client import add_url_argument

    add_url_argument(parser)


def run(args: argparse.Namespace) -> int:
    import getpass

    from .client import ask_admin

    return ask_admin(args, "release", "release a guest", {"actor": getpass.getuser()}, "not released")
