"""End a guest's quarantine after its reset attempts ran out (POST /api/vms/<vmid>/release with the
admin token): its incident closes and attempts start again from zero."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("vmid", type=int, help="the guest's id")
    from vmhealth.webhook.client import add_url_argument

    add_url_argument(parser)


def run(args: argparse.Namespace) -> int:
    import getpass

    from vmhealth.cli import load_config_or_exit
    from vmhealth.webhook.client import base_url, call

    config = load_config_or_exit(args, ())
    if not config.webhook.admin_token:
        print("vmhealth: webhook.admin_token: missing (needed to release a guest)")
        return 2
    params = {"cluster": args.cluster} if args.cluster else {}
    status, body = call("POST", f"{base_url(config, args.url)}/api/vms/{args.vmid}/release",
                        config.webhook.admin_token, args.timeout, params=params, json={"actor": getpass.getuser()})
    if body.get("success"):
        print(body.get("message"))
        return 0
    print(f"vmhealth: not released (HTTP {status}): {body.get('error')}")
    return 1
