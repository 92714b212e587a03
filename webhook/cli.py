"""Serve the remediation webhook: POST /alerts for Alertmanager, the manual reset/release API, the
history API and /metrics. The database is upgraded at start; pending work of an earlier process is
taken up.

It runs under gunicorn with one process and several threads.
`gunicorn -c webhook/gunicorn.conf.py 'vmhealth.webhook:create_app()'` is the equivalent for those
who run gunicorn themselves.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", metavar="HOST:PORT", help="override webhook.listen (default 127.0.0.1:9749)")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from vmhealth.cli import load_config_or_exit
    from vmhealth.webhook.server import serve

    config = load_config_or_exit(args, ("webhook",))
    if args.listen:
        config = replace(config, webhook=replace(config.webhook, listen=args.listen))
    return serve(config)
