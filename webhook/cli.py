"""Serve the remediation webhook: POST /alerts for Alertmanager, the manual reset/release API, the
history API and /metrics. The database is upgraded at start; pending work of an earlier process is
taken up.

It runs under gunicorn with one process and several threads.
`gunicorn -c webhook/gunicorn.conf.py 'vmhealth.webhook:create_app()'` is the equivalent for those
who run gunicorn themselves.
"""

from __future__ import annotations

import argparse

from vmhealth.subcommand import add_listen_argument, serve_section


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_listen_argument(parser, "webhook", "127.0.0.1:9749")


def run(args: argparse.Namespace) -> int:
    from .server import serve

    return serve_section(args, "webhook", serve)
