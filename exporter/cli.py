"""Serve the exporter: heartbeat ingest (POST /api/health/report), Proxmox state polled in the
background, /metrics for Prometheus and the read API (/api/vms, /api/status).

It runs under gunicorn with one worker process (the state lives in memory and is written behind to
the database) and several threads. `gunicorn -c exporter/gunicorn.conf.py 'vmhealth.exporter:create_app()'`
is the equivalent for those who run gunicorn themselves.
"""

from __future__ import annotations

import argparse

from vmhealth.subcommand import add_listen_argument, serve_section


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_listen_argument(parser, "exporter", "127.0.0.1:9747")


def run(args: argparse.Namespace) -> int:
    from .server import serve

    return serve_section(args, "exporter", serve)
