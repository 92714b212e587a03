"""Detection latency in the real stack: a guest's last heartbeat -> the webhook's reset call.

    python bench/detection_latency.py               # production timings / 12, 4 guests hung
    python bench/detection_latency.py --smoke       # production timings / 60, 1 guest

The whole product runs on loopback (`vmhealth.stack`: simulator, exporter, real Prometheus and
Alertmanager, webhook) with the production settings divided by `--scale`: agent interval 30 s,
exporter poll 15 s, Prometheus scrape and rule evaluation 15 s, `thresholds.stale_timeout` 5m, every
rule's `for:` (VMHung: 3m), Alertmanager's reset route `group_wait` 10 s. Guests are hung a few
seconds apart (so they meet the scrape and evaluation cycles at different phases). For each, the time
from the last heartbeat the exporter accepted (the simulator's agent log) to the reset request the
simulator received (its task log), both to the microsecond on the same clock.

Compared with the original design's worst case at the same scale: the stale timeout plus its 60 s
stale-check cycle (a reset as soon as a check finds the guest stale), and with what this design
should take at worst: stale timeout + scrape + evaluation + `for:` + evaluation + group_wait.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import write_result

from vmhealth.processes import wait_for
from vmhealth.stack import StackSettings, running_stack

PRODUCTION = {"agent_interval": 30.0, "poll_interval": 15.0, "scrape_interval": 15.0, "evaluation_interval": 15.0,
              "stale_timeout": 300.0, "vmhung_for": 180.0, "group_wait": 10.0, "original_check_cycle": 60.0}


def ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=12.0, help="divide production timings by this (default 12)")
    parser.add_argument("--hung", type=int, default=4, help="guests hung, a few seconds apart (default 4)")
    parser.add_argument("--guests", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="timings / 60, one guest")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results)")
    args = parser.parse_args()
    if args.smoke:
        args.scale, args.hung, args.guests = 60.0, 1, 6
    s = {k: v / args.scale for k, v in PRODUCTION.items()}
    settings = StackSettings(
        nodes=2, guests=args.guests, agent_interval=s["agent_interval"], stale_timeout=ms(s["stale_timeout"]),
        poll_interval=ms(s["poll_interval"]), scrape_interval=ms(s["scrape_interval"]),
        evaluation_interval=ms(s["evaluation_interval"]), rule_time_scale=1 / args.scale,
        group_wait=ms(s["group_wait"]), group_interval=ms(max(s["group_wait"], 1.0)), repeat_interval="1m",
        policy={"boot_grace": "0s", "max_actions_per_hour": 1000},
    )
    victims = [101 + 2 * i for i in range(args.hung)]
    stagger = s["scrape_interval"] * 1.37  # not a multiple of the cycles: each victim meets them at another phase
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vmhealth-bench-") as folder, running_stack(settings, folder) as stack:
        # Every guest reported and Prometheus has seen the exporter before anything is hung.
        wait_for(lambda: len(stack.query("vmhealth_heartbeat_timestamp_seconds")) >= args.guests,
                 60 + 3 * s["agent_interval"], "heartbeats of every guest in Prometheus", 0.5)
        for vmid in victims:
            stack.sim.hang(vmid)
            time.sleep(stagger)
        expected = (s["stale_timeout"] + s["scrape_interval"] + 2 * s["evaluation_interval"] + s["vmhung_for"]
                    + s["group_wait"] + s["agent_interval"])
        for vmid in victims:
            task = wait_for(lambda v=vmid: stack.sim.resets(v), 3 * expected + 60, f"the reset of guest {vmid}",
                            0.2)[0]
            last = stack.sim.guest(vmid)["agent_last_heartbeat"]
            rows.append({"vmid": vmid, "last_heartbeat": last, "reset_requested": task["requested_at"],
                         "seconds": task["requested_at"] - last})
    seconds = [r["seconds"] for r in rows]
    worst_design = (s["stale_timeout"] + s["scrape_interval"] + 2 * s["evaluation_interval"] + s["vmhung_for"]
                    + s["group_wait"])
    original_worst = s["stale_timeout"] + s["original_check_cycle"]
    result = {
        "scale": args.scale, "settings": {k: round(v, 3) for k, v in s.items()}, "rows": rows,
        "median_s": statistics.median(seconds), "max_s": max(seconds), "min_s": min(seconds),
        "design_worst_s": worst_design, "original_worst_s": original_worst,
        "median_production_s": statistics.median(seconds) * args.scale,
        "original_worst_production_s": original_worst * args.scale,
        "vs_original_worst": statistics.median(seconds) / original_worst,
    }
    print(f"scale 1/{args.scale:g}: last heartbeat -> reset median {result['median_s']:.1f} s (min "
          f"{result['min_s']:.1f}, max {result['max_s']:.1f}) over {len(rows)} guests; this design's worst "
          f"{worst_design:.1f} s; the original's worst {original_worst:.1f} s")
    path = write_result("detection_latency" + ("_smoke" if args.smoke else ""), result, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
