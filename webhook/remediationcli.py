"""Pause or resume automatic remediation at runtime, or show the brakes in force, through the running
webhook (POST /api/remediation/pause|resume with the admin token, GET /api/remediation with the viewer
or the admin token).

    vmhealth remediation pause --reason "storage maintenance"       # every cluster
    vmhealth remediation pause --cluster lab --reason "..."          # one cluster
    vmhealth remediation resume [--cluster lab]
    vmhealth remediation status

A pause is stored in the webhook's database, so every replica obeys it. While paused, alerts are
recorded and refused as `skipped:remediation-paused`; a manual reset still goes through. The
history keeps who paused and resumed, and why."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("pause", "resume", "status"), help="what to do")
    parser.add_argument("--reason", help="why (required to pause), kept in the history")
    parser.add_argument("--actor", default=None, help="who asks (default: the login name)")
    from .client import add_url_argument

    add_url_argument(parser)


def run(args: argparse.Namespace) -> int:
    import getpass

    from vmhealth.subcommand import load_config_or_exit

    from .client import base_url, call, reader_token, tls_options

    config = load_config_or_exit(args, ())
    url = f"{base_url(config, args.url)}/api/remediation"
    if args.action == "status":
        status, body = call("GET", url, reader_token(config), args.timeout, **tls_options(args))
        if status != 200:
            print(f"vmhealth: the webhook answered HTTP {status}: {body.get('error')}")
            return 1
        brakes = [] if body.get("enabled", True) else ["kill switch on (webhook.policy.enabled: false)"]
        brakes += ["dry run"] if body.get("dryRun") else []
        for pause in body.get("paused", []):
            where = "every cluster" if pause["scope"] == "*" else f"cluster {pause['scope']}"
            brakes.append(f"{where} paused since {pause['since']} by {pause['actor']}: {pause['reason']}")
        print("\n".join(brakes) if brakes else "automatic remediation is on: nothing paused")
        return 0
    if args.action == "pause" and not (args.reason or "").strip():
        print("vmhealth: --reason: required to pause (the history and VMHealthRemediationPaused show it)")
        return 2
    if not config.webhook.admin_token:
        print(f"vmhealth: webhook.admin_token: missing (needed to {args.action} remediation)")
        return 2
    body = {"actor": args.actor or getpass.getuser(), **({"reason": args.reason} if args.reason else {}),
            **({"cluster": args.cluster} if args.cluster else {})}
    status, answer = call("POST", f"{url}/{args.action}", config.webhook.admin_token, args.timeout, json=body,
                          **tls_options(args))
    if answer.get("success"):
        print(answer.get("message"))
        return 0
    print(f"vmhealth: not done (HTTP {status}): {answer.get('error')}")
    return 1
