"""`vmhealth-agent` / `python -m vmhealth.agent`: the agent's command on its own.

The same options as `vmhealth agent`, without loading the other programs' command modules: the
lightest start for thousands of guests, and what the systemd unit and the Windows service run.
"""

from __future__ import annotations

import argparse
import sys

from vmhealth import __version__
from vmhealth.subcommand import add_common_arguments, run_logged

from . import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vmhealth-agent", description=(cli.__doc__ or "").strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vmhealth-agent {__version__}")
    add_common_arguments(parser)
    cli.add_arguments(parser)
    args = parser.parse_args(argv)
    return run_logged(cli.run, args)


if __name__ == "__main__":
    sys.exit(main())
