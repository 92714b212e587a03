"""What every `vmhealth` subcommand shares at run time: the common options, the configuration
loaded or a clean exit, and logging set up before it runs.

The dispatcher (`vmhealth.cli`) and the agent's own entry point use it, and so do the components'
command modules; it imports no component, so that none of them needs the dispatcher.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import replace

from vmhealth.config import Config, ConfigError, load, secrets_of
from vmhealth.logsetup import add_secrets, setup_logging


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", default=os.environ.get("VMHEALTH_CONFIG"),
        help="configuration file (default: $VMHEALTH_CONFIG, else ./vmhealth.yml if present, "
        "else environment variables only)",
    )
    parser.add_argument(
        "--log-level", default=os.environ.get("VMHEALTH_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"], help="log verbosity (default: info)",
    )
    parser.add_argument(
        "--log-format", default=os.environ.get("VMHEALTH_LOG_FORMAT", "text"), choices=["text", "json"],
        help="text lines, or one JSON object per line for log shippers (default: text)",
    )


def load_config_or_exit(args: argparse.Namespace, components: tuple[str, ...]) -> Config:
    """The configuration for `components`; on problems, print each on stderr and exit 2."""
    try:
        config = load(args.config, components=components)
    except ConfigError as exc:
        source = args.config or "configuration"
        print(f"vmhealth: {source} has {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None
    add_secrets(secrets_of(config))
    return config


def run_logged(run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """`run(args)` with logging set up from the common options; Ctrl-C exits 130."""
    setup_logging(args.log_level, args.log_format)
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        return 130


def add_listen_argument(parser: argparse.ArgumentParser, section: str, default: str) -> None:
    """A server's --listen, which overrides `<section>.listen`."""
    parser.add_argument("--listen", metavar="HOST:PORT", help=f"override {section}.listen (default {default})")


def serve_section(args: argparse.Namespace, section: str, serve: Callable[[Config], int]) -> int:
    """`serve(config)` with the configuration of `section`, its listen address taken from --listen if given."""
    config = load_config_or_exit(args, (section,))
    if args.listen:
        config = replace(config, **{section: replace(getattr(config, section), listen=args.listen)})
    return serve(config)
