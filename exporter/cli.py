"""Serve the exporter: heartbeat ingest (POST /api/health/report), Proxmox state polled in the
background, /metrics for Prometheus and the read API (/api/vms, /api/status).

It runs under gunicorn with one worker process (the state lives in memory and is written behind to
the database) and several threads. `gunicorn -c exporter/gunicorn.conf.py 'vmhealth.exporter:create_app()'`
is the equivalent for those who run gunicorn themselves.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", metavar="HOST:PORT", help="override exporter.listen (default 127.0.0.1:9747)")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from vmhealth.cli import load_config_or_exit
    from vmhealth.exporter.server import serve

    config = load_config_or_exit(args, ("exporter",))
    if args.listen:
        config = replace(config, exporter=replace(config.exporter, listen=args.listen))
    return serve(config)
