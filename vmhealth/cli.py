"""The `vmhealth` command: one entry point, a subcommand per program.

Subcommands live in the module named in COMMANDS; each module has `add_arguments(parser)` and
`run(args) -> int`, and imports its heavy dependencies inside `run` so that `--help` stays fast and
the agent's subcommand works where only psutil is installed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from vmhealth import __version__
from vmhealth.config import Config, ConfigError, load, secrets_of
from vmhealth.logsetup import add_secrets, setup_logging

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "exporter": ("vmhealth.exporter.cli", "serve heartbeat ingest, Proxmox state and /metrics"),
    "agent": ("vmhealth.agent.cli", "report this guest's health: push heartbeats and/or serve /metrics"),
    "check-config": ("vmhealth.checkconfig", "check a configuration file and list every problem"),
    "agent-key": ("vmhealth.keycli", "print a guest's own agent key, derived from exporter.api_key"),
    "sim": ("vmhealth.simulator.cli", "run a simulated Proxmox VE cluster (HTTPS API, faults, agents)"),
    "demo": ("vmhealth.demo", "watch a simulated guest hang and be reset: the whole product on loopback"),
    "db": ("vmhealth.dbcli", "database maintenance (`db upgrade`)"),
    "webhook": ("vmhealth.webhook.cli", "serve the Alertmanager receiver that resets hung guests, and its history"),
    "reset": ("vmhealth.webhook.resetcli", "reset a guest now, through the webhook's policy"),
    "release": ("vmhealth.webhook.releasecli", "end a guest's quarantine after its reset attempts ran out"),
    "close-incident": ("vmhealth.webhook.closecli", "close a guest's incident whose resolved alert never comes"),
    "history": ("vmhealth.webhook.historycli", "print the remediation history as a table"),
    "remediation": ("vmhealth.webhook.remediationcli", "pause or resume automatic remediation, or show the brakes"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the options of `command` only: its module is the only one imported.

    Importing only the chosen subcommand keeps `vmhealth agent` free of every server-side module.
    """
    parser = argparse.ArgumentParser(
        prog="vmhealth",
        description="Finds Proxmox guests that Proxmox calls running but that stopped reporting, "
        "and resets them safely. Every subcommand reads one YAML file (--config).",
        epilog="Run `vmhealth COMMAND --help` for a command's options. Environment variables "
        "VMHEALTH_<SECTION>_<KEY> override single keys of the file.",
    )
    parser.add_argument("--version", action="version", version=f"vmhealth {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if name != command:
            subparsers.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name, help=help_text, description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_common_arguments(sub)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def _chosen_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is one)."""
    return next((word for word in argv if word in COMMANDS), None)


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_chosen_command(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    setup_logging(args.log_level, args.log_format)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
