"""Detection latency in the real stack, at production timings: a guest's last heartbeat -> its reset.

    python bench/detection_latency.py               # production timings, 6 guests hung, ~6 minutes
    python bench/detection_latency.py --smoke       # production timings / 60, 1 guest, for the tests

The whole product runs on loopback (`vmhealth.stack`: simulator, exporter, real Prometheus and
Alertmanager with the shipped rules and routes, webhook) with the default configuration and
production timings: agents every 30 s, exporter poll, Prometheus scrape and rule evaluation every
15 s, `thresholds.stale_timeout` 90 s, `thresholds.io_window` 60 s, the rules' own `for:`,
Alertmanager's reset route `group_wait` 10 s, and a simulated Proxmox whose agent/ping waits 3 s for
a QEMU guest agent that does not answer, as Proxmox does. `--scale` divides all of that, for quick
runs only; the figures that count are taken at scale 1.

Hung guests are frozen a few seconds apart (so they meet the scrape and evaluation cycles at
different phases): no heartbeats, no disk or network I/O, no guest-agent answer. For each, the time
from the last heartbeat the exporter accepted (the simulator's agent log) to the reset request the
simulator received (its task log), both on the same clock. In the same run, other guests only lose
their vmhealth agent while they keep doing I/O, one with a QEMU guest agent and one without: they
must never be reset, and `VMAgentSilent` must fire for them.

Compared with the original design's worst case (the stale timeout of 5 minutes plus its 60 s
stale-check cycle) and with vSphere HA VM Monitoring (a failure declared 81-119 s after the VMware
Tools heartbeats stop, and a reset only once the VM did no I/O for the 120 s `das.iostatsInterval`).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from typing import Any

from common import parse_script_args, save_result, script_parser

from vmhealth.stack.processes import wait_for
from vmhealth.stack.running import StackSettings, running_stack

PRODUCTION = {"agent_interval": 30.0, "poll_interval": 15.0, "scrape_interval": 15.0, "evaluation_interval": 15.0,
              "stale_timeout": 90.0, "io_window": 60.0, "vmhung_for": 15.0, "agent_silent_for": 60.0,
              "group_wait": 10.0, "agent_ping_delay": 3.0}
ORIGINAL = {"stale_timeout": 300.0, "check_cycle": 60.0}
VSPHERE = {"declared_min": 81.0, "declared_max": 119.0, "io_window": 120.0}


def ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def design_worst(s: dict[str, float]) -> float:
    """The latest this design resets, from the last heartbeat.

    Hung needs the heartbeat stale (stale timeout) and the I/O idle for the window, counted from the
    first poll after the freeze, which comes at most one agent interval after the last heartbeat; then
    one evaluation, `for:`, Alertmanager's group_wait and the webhook's guest-agent ping."""
    judged = max(s["stale_timeout"], s["agent_interval"] + s["poll_interval"] + s["io_window"])
    return judged + s["evaluation_interval"] + s["vmhung_for"] + s["group_wait"] + s["agent_ping_delay"]


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="divide production timings by this (default 1: the figures that count)")
    parser.add_argument("--hung", type=int, default=6, help="guests frozen, a few seconds apart (default 6)")
    parser.add_argument("--agent-dead", type=int, default=2,
                        help="guests whose vmhealth agent dies while they keep working (default 2)")
    parser.add_argument("--guests", type=int, default=40)
    args = parse_script_args(parser, "timings / 60, one guest hung, one agent dead",
                             scale=60.0, hung=1, agent_dead=1, guests=6)
    if args.hung < 1 or args.agent_dead < 0 or args.guests < 2 * (args.hung + args.agent_dead) + 1:
        parser.error("--hung must be at least 1, and --guests more than twice --hung plus --agent-dead "
                     "(so that neither the circuit breaker nor the mass-loss rule holds the resets)")
    s = {k: v / args.scale for k, v in PRODUCTION.items()}
    settings = StackSettings(
        nodes=2, guests=args.guests, agent_interval=s["agent_interval"], stale_timeout=ms(s["stale_timeout"]),
        io_window=ms(s["io_window"]), poll_interval=ms(s["poll_interval"]), scrape_interval=ms(s["scrape_interval"]),
        evaluation_interval=ms(s["evaluation_interval"]), rule_time_scale=1 / args.scale,
        group_wait=ms(s["group_wait"]), group_interval=ms(max(s["group_wait"], 1.0)), repeat_interval="1h",
        sim_agent_ping_delay=s["agent_ping_delay"], sim_boot_seconds=max(1.0, 20 / args.scale),
        policy={"boot_grace": "0s", "max_actions_per_hour": 1000},
    )
    victims = [101 + 2 * i for i in range(args.hung)]
    survivors = [102 + 2 * i for i in range(args.agent_dead)]  # agent dead, guest working
    stagger = s["scrape_interval"] * 1.37  # not a multiple of the cycles: each victim meets them at another phase
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vmhealth-bench-") as folder, running_stack(settings, folder) as stack:
        # Every guest reported, Prometheus has seen two polls' counters, before anything happens.
        wait_for(lambda: len(stack.query("vmhealth_heartbeat_timestamp_seconds")) >= args.guests
                 and len(stack.query("cluster_vmid:vmhealth_pve_guest_io_bytes:rate1m")) >= args.guests,
                 120 + 3 * s["agent_interval"], "heartbeats and I/O rates of every guest in Prometheus", 0.5)
        for index, vmid in enumerate(survivors):
            if index % 2:
                stack.sim.set_guest_agent(vmid, "none")
            stack.sim.agent_dead(vmid)
        for vmid in victims:
            stack.sim.hang(vmid)
            time.sleep(stagger)
        limit = 2 * design_worst(s) + 60 / args.scale + 30
        for vmid in victims:
            task = wait_for(lambda v=vmid: stack.sim.resets(v), limit, f"the reset of guest {vmid}", 0.2)[0]
            last = stack.sim.guest(vmid)["agent_last_heartbeat"]
            rows.append({"vmid": vmid, "last_heartbeat": last, "reset_requested": task["requested_at"],
                         "seconds": task["requested_at"] - last})
        # The agent-dead guests have been silent longer than any victim took to be reset; one more
        # design's worst case makes sure nothing is merely late.
        wait_for(lambda: {a["labels"]["vmid"] for a in stack.alerts() if a["labels"].get("alertname") ==
                          "VMAgentSilent" and a["state"] == "firing"} >= {str(v) for v in survivors},
                 limit, "VMAgentSilent for every guest whose agent died", 0.5)
        time.sleep(design_worst(s))
        silent = [{"vmid": vmid, "guest_agent": stack.sim.guest(vmid)["guest_agent"],
                   "resets": len(stack.sim.resets(vmid)),
                   "decisions": [r["outcome"] for r in stack.resets(vmid) if r.get("action")],
                   "agent_silent_firing": any(a["labels"].get("vmid") == str(vmid) and a["state"] == "firing"
                                              and a["labels"].get("alertname") == "VMAgentSilent"
                                              for a in stack.alerts())} for vmid in survivors]
    seconds = [r["seconds"] for r in rows]
    original_worst = (ORIGINAL["stale_timeout"] + ORIGINAL["check_cycle"]) / args.scale
    result = {
        "scale": args.scale, "settings": {k: round(v, 3) for k, v in s.items()}, "rows": rows,
        "agent_dead": silent, "wrongful_resets": sum(r["resets"] for r in silent),
        "median_s": statistics.median(seconds), "max_s": max(seconds), "min_s": min(seconds),
        "design_worst_s": design_worst(s), "original_worst_s": original_worst,
        "vsphere_s": {k: v / args.scale for k, v in VSPHERE.items()},
        "median_production_s": statistics.median(seconds) * args.scale,
        "max_production_s": max(seconds) * args.scale,
        "vs_original_worst": statistics.median(seconds) / original_worst,
    }
    print(f"scale 1/{args.scale:g}: last heartbeat -> reset median {result['median_s']:.1f} s (min "
          f"{result['min_s']:.1f}, max {result['max_s']:.1f}) over {len(rows)} guests; this design's worst "
          f"{result['design_worst_s']:.1f} s; the original's worst {original_worst:.1f} s; "
          f"resets of guests whose agent died: {result['wrongful_resets']}")
    save_result("detection_latency", result, args)
    return 1 if result["wrongful_resets"] else 0


if __name__ == "__main__":
    sys.exit(main())
