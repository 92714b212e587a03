"""Print the remediation history as a table, newest first, from the running webhook
(GET /api/resets): every decision, acted on or refused, with its reason and, in brackets, a short
summary of the evidence it was based on."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

COLUMNS = (("time", 19), ("cluster", 10), ("vmid", 6), ("name", 14), ("action", 10), ("outcome", 24),
           ("attempt", 7), ("actor", 16), ("detail", 0))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vmid", type=int, help="one guest only")
    parser.add_argument("--since", help="how far back: a duration (24h), unix seconds or an RFC 3339 time")
    parser.add_argument("--limit", type=int, default=50, help="rows to show (default 50, at most 1000)")
    parser.add_argument("--outcome", help="only this outcome: success, failed, unknown, dry-run, skipped, "
                        "skipped:<reason>")
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    from .client import add_url_argument

    add_url_argument(parser)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width columns; the last one (detail) takes the rest of the line."""
    lines = ["  ".join(name.upper().ljust(width) if width else name.upper() for name, width in COLUMNS)]
    for row in rows:
        when = datetime.fromisoformat(row["time"].replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
        detail = row.get("error") or row.get("exitstatus") or row.get("reason") or ""
        if row.get("forced"):
            detail = f"[forced] {detail}"
        summary = evidence_summary(row.get("evidence") or {})
        if summary:
            detail = f"{detail} [{summary}]" if detail else f"[{summary}]"
        values = {"time": when, "cluster": row["cluster"], "vmid": str(row["vmid"] or ""), "name": row["name"],
                  "action": row["action"] or "-", "outcome": row["outcome"], "attempt": str(row["attempt"] or "-"),
                  "actor": row["actor"], "detail": " ".join(str(detail).split())}
        cells = []
        for name, width in COLUMNS:
            text = values[name]
            cells.append(text if not width else (text if len(text) <= width else text[: width - 1] + "~").ljust(width))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def evidence_summary(evidence: dict[str, Any]) -> str:
    """What a decision was based on, in a few words: `heartbeat 412s, io 0 B/s idle 300s, agent timeout`."""
    parts = []
    if _number(evidence.get("heartbeat_age_seconds")):
        parts.append(f"heartbeat {evidence['heartbeat_age_seconds']:.0f}s")
    if _number(evidence.get("io_rate_bytes_per_second")):
        idle = f" idle {evidence['io_idle_seconds']:.0f}s" if _number(evidence.get("io_idle_seconds")) else ""
        parts.append(f"io {evidence['io_rate_bytes_per_second']:.0f} B/s{idle}")
    judged, live = evidence.get("io_bytes_total_judged"), evidence.get("io_bytes_total_live")
    if _number(judged) and _number(live):
        parts.append(f"{live - judged:+.0f} B since judged")
    if _number(evidence.get("heartbeat_age")):
        parts.append(f"heartbeat now {evidence['heartbeat_age']:.0f}s ({evidence.get('heartbeat_source', '?')})")
    if evidence.get("guest_agent"):
        parts.append(f"agent {evidence['guest_agent']}")
    if evidence.get("qmpstatus") and evidence.get("qmpstatus") != "running":
        parts.append(f"qmp {evidence['qmpstatus']}")
    return ", ".join(parts)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def run(args: argparse.Namespace) -> int:
    from vmhealth.subcommand import load_config_or_exit

    from .client import base_url, call, print_json, reader_token, tls_options

    config = load_config_or_exit(args, ())
    params: dict[str, Any] = {"limit": args.limit}
    for key in ("vmid", "since", "outcome", "cluster"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    token = reader_token(config)
    status, body = call("GET", f"{base_url(config, args.url)}/api/resets", token, args.timeout, params=params,
                        **tls_options(args))
    if status != 200:
        hint = " (give webhook.viewer_token or webhook.admin_token in --config)" if status == 401 and not token else ""
        print(f"vmhealth: history unavailable (HTTP {status}): {body.get('error')}{hint}")
        return 1
    if args.json:
        print_json(body)
    elif not body["resets"]:
        print("no remediation decisions recorded" + (" for these filters" if len(params) > 1 else ""))
    else:
        print(format_table(body["resets"]))
    return 0
