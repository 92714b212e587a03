"""Database maintenance. `vmhealth db upgrade` applies the schema migrations of the exporter's and
the webhook's databases (each server also does this at start); --component limits it to one."""

from __future__ import annotations

import argparse

from vmhealth.config import DATABASE_COMPONENTS as COMPONENTS
from vmhealth.subcommand import load_config_or_exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["upgrade", "current"], help="upgrade to the newest schema, "
                        "or print the current revision")
    parser.add_argument("--component", choices=COMPONENTS, action="append",
                        help="only this component's database (default: both)")


def run(args: argparse.Namespace) -> int:
    from vmhealth.db import current_revision, make_engine, upgrade

    config = load_config_or_exit(args, ())
    for component in args.component or COMPONENTS:
        url = getattr(config, component).database_url
        engine = make_engine(url)
        try:
            if args.action == "upgrade":
                upgrade(engine, component)
            print(f"{component}: {engine.url.render_as_string(hide_password=True)} at revision "
                  f"{current_revision(engine, component) or '(empty)'}")
        finally:
            engine.dispose()
    return 0
