"""Check a configuration file: print every problem with its path and exit 2, or print `ok`.

With --component, the keys that program needs must be set too; without it, each program whose
section is in the file is checked.
"""

from __future__ import annotations

import argparse
import json
import sys

from vmhealth.config import COMPONENT_REQUIREMENTS, ConfigError, load, read_file, redacted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", help="the file to check (default: --config, else ./vmhealth.yml)")
    parser.add_argument(
        "--component", action="append", choices=sorted(COMPONENT_REQUIREMENTS),
        help="also require what this program needs (repeatable)",
    )
    parser.add_argument("--show", action="store_true", help="print the effective configuration, secrets hidden")


def run(args: argparse.Namespace) -> int:
    path = args.file or args.config or "vmhealth.yml"
    try:
        raw = read_file(path)
        components = args.component or [c for c in COMPONENT_REQUIREMENTS if c in raw]
        config = load(path, components=components, raw=raw)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    checked = ", ".join(components) if components else "no program section"
    print(f"{path}: ok ({len(config.clusters)} cluster(s); checked for {checked})")
    if args.show:
        print(json.dumps(redacted(config), indent=2))
    return 0
