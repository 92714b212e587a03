"""Run every comparison in bench/ once and write docs/benchmarks.md from that one run.

    python bench/run_all.py                 # the full run (`make bench`), about 10-15 minutes on 2 cores
    python bench/run_all.py --smoke         # every script's seconds-long version; checks they run
    python bench/run_all.py --render-only   # docs/benchmarks.md again from bench/last-run.json

Each script writes its JSON to the results folder; this one adds how long each took and the machine's
load before and after, keeps the lot in benchmarks.json (and bench/last-run.json, which is committed)
and renders the tables, the goals and, where a goal is missed, by how much and the profile of what
limits it (bench/profiles/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS, machine, script_parser
from report import headline, render

BENCH = Path(__file__).resolve().parent
DOC = BENCH.parent / "docs" / "benchmarks.md"
LAST_RUN = BENCH / "last-run.json"  # the results docs/benchmarks.md shows, kept in the repository
# What follows this line in the page is written by hand from scripts run on their own; rendering keeps it.
KEPT = "<!-- Below: scripts run on their own, numbers copied by hand; bench/run_all.py keeps this part. -->"
# name -> extra arguments of the full run
SCRIPTS: dict[str, list[str]] = {
    "scrape_cost": ["--profile"],
    "ingest_rate": ["--profile"],
    "agent_footprint": [],
    "webhook_latency": ["--profile"],
    "detection_latency": [],
    "slow_clients": [],
}


def run(name: str, extra: list[str], smoke: bool, out: Path) -> dict[str, Any]:
    command = [sys.executable, str(BENCH / f"{name}.py"), "--out", str(out), *(["--smoke"] if smoke else extra)]
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    completed = subprocess.run(command, check=False)
    seconds = time.monotonic() - started
    if completed.returncode != 0:
        raise SystemExit(f"{name} failed with exit status {completed.returncode}")
    data = json.loads((out / f"{name}{'_smoke' if smoke else ''}.json").read_text())
    return {**data, "duration_s": round(seconds, 1)}


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--smoke", action="store_true", help="every script's --smoke; docs are not written")
    parser.add_argument("--only", help="comma-separated scripts to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results)")
    parser.add_argument("--render-only", action="store_true", help="render docs from the last full run")
    parser.add_argument("--doc", type=Path, default=DOC, help="the page to write (default docs/benchmarks.md)")
    args = parser.parse_args()
    combined_path = args.out / ("benchmarks_smoke.json" if args.smoke else "benchmarks.json")
    if not args.render_only:
        names = args.only.split(",") if args.only else list(SCRIPTS)
        unknown = sorted(set(names) - set(SCRIPTS))
        if unknown:
            parser.error(f"unknown script(s) {', '.join(unknown)}; choose from {', '.join(SCRIPTS)}")
        args.out.mkdir(parents=True, exist_ok=True)
        before = machine()
        started = time.monotonic()
        combined: dict[str, Any] = {}
        earlier = combined_path if combined_path.exists() or args.smoke else LAST_RUN
        if args.only and earlier.exists():  # re-running some scripts keeps the others' results
            combined = json.loads(earlier.read_text())
        results = combined.setdefault("results", {})
        replaced = {name: headline(name, results[name]) for name in names if name in results}
        for name in names:
            results[name] = run(name, SCRIPTS[name], args.smoke, args.out)
        if args.only and "machine_before" in combined:  # the page says which tables came later, under what load
            combined.setdefault("reruns", []).append({
                "only": names, "date": results[names[0]]["date"], "load_before": before["load_average"],
                "load_after": machine()["load_average"], "replaced": replaced})
        else:
            combined.update({"machine_before": before, "machine_after": machine(), "smoke": args.smoke,
                             "command": "make bench" if not args.smoke else "python bench/run_all.py --smoke"})
        combined["total_s"] = round(sum(r["duration_s"] for r in results.values()), 1)
        combined["this_run_s"] = round(time.monotonic() - started, 1)
        combined_path.write_text(json.dumps(combined, indent=2) + "\n")
        if not args.smoke:
            LAST_RUN.write_text(json.dumps(combined, indent=2) + "\n")
        print(f"wrote {combined_path} ({combined['this_run_s']:.0f} s)")
    if not args.smoke:
        combined = json.loads((combined_path if not args.render_only else LAST_RUN).read_text())
        old = args.doc.read_text() if args.doc.exists() else ""
        kept = old[old.index(KEPT):] if KEPT in old else ""
        args.doc.write_text(render(combined, BENCH / "profiles") + ("\n" + kept if kept else ""))
        print(f"wrote {os.path.relpath(args.doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
