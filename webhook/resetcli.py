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
    from vmhealth.webhook.client import add_url_argument

    add_url_argument(parser)


def run(args: argparse.Namespace) -> int:
    import getpass

    from vmhealth.cli import load_config_or_exit
    from vmhealth.webhook.client import base_url, call, tls_options

    config = load_config_or_exit(args, ())
    if not config.webhook.admin_token:
        print("vmhealth: webhook.admin_token: missing (needed to ask for a reset)")
        return 2
    params = {"cluster": args.cluster} if args.cluster else {}
    status, body = call("POST", f"{base_url(config, args.url)}/api/vms/{args.vmid}/reset", config.webhook.admin_token,
                        args.timeout, params=params,
                        json={"reason": args.reason, "force": args.force, "actor": args.actor or getpass.getuser()},
                        **tls_options(args))
    if body.get("success"):
        print(f"{body.get('message')} (attempt {body.get('resetAttempts')})")
        return 0
    print(f"vmhealth: not reset (HTTP {status}): {body.get('error')}")
    return 1
