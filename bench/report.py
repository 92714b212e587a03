"""docs/benchmarks.md from one run's results (bench/results/benchmarks.json): tables, goals, verdicts.

Every figure on the page comes from the JSON; the prose around a missed goal says by how much it was
missed and shows the profile (bench/profiles/) of what limits it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _f(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _verdict(ok: bool, missed: str = "") -> str:
    return "met" if ok else f"**missed** ({missed})"


def _profile(folder: Path, name: str, lines: int = 22) -> list[str]:
    path = folder / f"{name}.txt"
    if not path.exists():
        return []
    text = path.read_text().splitlines()
    return ["", f"Profile excerpt (`bench/profiles/{name}.txt`):", "", "```", *text[:lines], "```"]


def _busy(folder: Path, name: str) -> str:
    """The profile's 'over N s ... X % of the time' line, without the '# ', or ''."""
    path = folder / f"{name}.txt"
    if not path.exists():
        return ""
    return next((line[2:] for line in path.read_text().splitlines() if line.startswith("# over ")), "")


def headline(name: str, result: dict[str, Any]) -> str:
    """A script's main figure in a few words (what a re-run replaced)."""
    if name == "scrape_cost":
        return "speed-ups " + ", ".join(f"{_f(r['speedup'])}x" for s in result["sizes"] for r in s["rows"][1:])
    if name == "ingest_rate":
        best = result.get("best_under_50ms_p99")
        return f"best {_f(best['rate'], 0)} reports/s at p99 < 50 ms" if best else "no level with p99 < 50 ms"
    if name == "agent_footprint":
        return ", ".join(f"{r['program']} {_f(r['rss_bytes'] / 2**20)} MiB" for r in result["programs"])
    if name == "webhook_latency":
        return ", ".join(f"{r['alerts']} alerts ({r['mode']}) decided in {_f(r['decided_s'], 2)} s"
                         for r in result["bulk"])
    if name == "detection_latency":
        wrongful = f", {result['wrongful_resets']} wrongful resets" if "wrongful_resets" in result else ""
        return f"median {_f(result['median_s'])} s, slowest {_f(result['max_s'])} s at 1/{result['scale']:g}{wrongful}"
    if name == "slow_clients":
        return f"slowest answer {_f(max(r['max_ms'] for r in result['rows']))} ms under {result['connections']} " \
            "hostile connections"
    return ""


def _replaced(rerun: dict[str, Any]) -> str:
    replaced = rerun.get("replaced") or {}
    added = [name for name in rerun["only"] if name not in replaced]
    text = ", which had measured: " + "; ".join(f"{k}: {v}" for k, v in replaced.items()) if replaced else ""
    return text + (f"; {', '.join(added)} was new then" if added else "")


def _header(data: dict[str, Any]) -> list[str]:
    m = data["machine_before"]
    after = data["machine_after"]
    minutes = data["total_s"] / 60
    first = min(data["results"].values(), key=lambda r: r["date"])  # the full run; re-runs come later
    return [
        "# Benchmarks",
        "",
        "vmhealth next to the tools a Proxmox user would otherwise pick. Every table comes from one run of",
        "`make bench` (`python bench/run_all.py`), which runs the scripts in `bench/` and rewrote this page;",
        "each script measures both sides in the same run, alternately, on the same machine, so the **ratios**",
        "are the claims: absolute times drift on a shared machine. CI runs every script's `--smoke` version",
        "(`tests/deploy/test_bench_smoke.py`), which checks that they run, not the numbers.",
        "",
        f"- **Machine:** {m['cores']} cores, {m['cpu']}, {m['ram_gib']} GiB RAM, Python {m['python']}, "
        f"Linux {m['kernel']}",
        f"- **Date:** {first['date'][:10]} (UTC); **command:** `{data['command']}`; "
        f"**duration:** {_f(minutes)} minutes (the scripts)",
        f"- **Load:** load average {m['load_average']} before and {after['load_average']} after the run "
        "(1, 5, 15 minutes). Other jobs shared the machine when the load is above ~1: absolute times are "
        "then inflated, the ratios much less, since both sides ran alternately under the same load.",
        *[f"- **Re-run later:** `python bench/run_all.py --only {','.join(r['only'])}` at {r['date']} "
          f"(load average {r['load_before']} before, {r['load_after']} after); the other tables are from the "
          "run above" + _replaced(r) + "." + (f" {r['note']}" if r.get("note") else "")
          for r in data.get("reruns", [])],
        "",
    ]


def _scrape(data: dict[str, Any], profiles: Path) -> list[str]:
    out = ["## 1. Scrape cost: vmhealth exporter vs prometheus-pve-exporter", "",
           "`bench/scrape_cost.py`. Both against the simulator (`vmhealth sim`, its own process, real HTTPS);",
           "prometheus-pve-exporter from PyPI with its default collectors, scraped as `/pve?cluster=1&node=0`",
           "(cluster metrics only) and `/pve?cluster=1&node=1` (its default). Our exporter runs under gunicorn",
           "as users run it, with a heartbeat for every guest (the simulator's agents keep reporting during the",
           "measurement) and Prometheus' `Accept-Encoding: gzip`. A scrape is timed from the request to the",
           "last byte, decompressed; sizes are of the uncompressed page (pve-exporter does not compress).",
           "",
           "| guests (nodes) | target | scrapes | median ms | p95 ms | bytes/guest | series/guest | gzip bytes/guest "
           "| Proxmox calls | vmhealth faster |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    missed: list[str] = []
    big = [s for s in data["sizes"] if s["guests"] >= 1000] or data["sizes"]  # a smoke run has small sizes only
    for size in data["sizes"]:
        g = size["guests"]
        ours = size["rows"][0]
        for row in size["rows"]:
            if row["target"] == "vmhealth":
                idle, busy = row["api_calls"]["idle"], row["api_calls"]["scraping"]
                calls = (f"{_f(idle['calls_per_poll'] or 0, 0)} per poll ({idle['calls']} in {idle['window_s']:g} s "
                         f"idle, {busy['calls']} in {busy['window_s']:g} s with {busy['scrapes']} scrapes)")
                faster = ""
            else:
                calls = f"{row['api_calls_per_scrape']} per scrape"
                faster = f"{_f(row['speedup'])}x"
            gz = row["wire_bytes"] / g if row["target"] == "vmhealth" else row["bytes_per_guest"]
            out.append(f"| {g:,} ({size['nodes']}) | {row['target']} | {row['n']} | {_f(row['median_ms'])} | "
                       f"{_f(row['p95_ms'])} | {_f(row['bytes_per_guest'], 0)} | {_f(row['series_per_guest'])} | "
                       f"{_f(gz, 0)} | {calls} | {faster} |")
        if size in big:
            for row in size["rows"][1:]:
                if row["speedup"] < 25:
                    missed.append(f"{g:,} guests vs {row['target']}: {_f(row['speedup'])}x instead of 25x "
                                  f"(our median {_f(ours['median_ms'])} ms would have to be "
                                  f"{_f(row['median_ms'] / 25)} ms)")
    bytes_ratio = min((r["bytes_ratio"] for s in big for r in s["rows"][1:]), default=0)
    speed = [r["speedup"] for s in big for r in s["rows"][1:]]
    constant = all(s["rows"][0]["api_calls"]["idle"]["calls_per_poll"] ==
                   s["rows"][0]["api_calls"]["scraping"]["calls_per_poll"] for s in data["sizes"])
    out += ["", "Goals (1,000 and 10,000 guests):", "",
            f"- ≥ 25x faster scrapes: {_verdict(not missed, '; '.join(missed))}; "
            f"measured {', '.join(_f(x) + 'x' for x in speed)}.",
            f"- ≤ a third of the bytes per guest: "
            f"{_verdict(bytes_ratio >= 3, f'{_f(bytes_ratio, 2)}x fewer, not 3x')}.",
            f"- A constant number of Proxmox calls per poll, whatever the scrape rate: "
            f"{_verdict(constant, 'differs')}."]
    if bytes_ratio < 3:
        ours = big[-1]["rows"][0]
        per_series = ours["bytes_per_guest"] / max(ours["series_per_guest"], 1)
        out += ["", f"*Bytes per guest, by how much:* {_f(ours['bytes_per_guest'], 0)} bytes where a third of "
                f"pve-exporter's would be {_f(ours['bytes_per_guest'] * bytes_ratio / 3, 0)}. What limits it: the "
                f"page carries {_f(ours['series_per_guest'])} series per guest at ~{_f(per_series, 0)} bytes each, "
                "and most of each line is contract: the metric name (`vmhealth_guest_memory_total_bytes`, …) and "
                "the three identity labels `cluster`, `node`, `vmid` that DESIGN.md fixes and the rules join on; "
                "`vmhealth_guest_info` adds name, type, hostname and tags. Values are already short (heartbeat "
                "times to the millisecond, CPU to six digits). What Prometheus transfers is the gzip column: "
                f"{_f(ours['wire_bytes'] / big[-1]['guests'], 0)} bytes per guest."]
    if missed:
        out += ["", "*Scrape speed, by how much and why:* " + "; ".join(missed) + ". The scrape itself only joins "
                "the families that changed and compresses them (the lines of changed guests are formatted in the "
                "background every second); at 10,000 guests with agents every 30 s, about a third of the guests "
                "change between two scrapes here, so most of the page is joined and compressed again. The same "
                "process also takes the agents' heartbeats meanwhile (one Python process, one GIL), which the "
                "profile shows next to the scrape."]
        out += _profile(profiles, f"scrape_vmhealth_{data['sizes'][-1]['guests']}")
    return [*out, ""]


def _ingest(data: dict[str, Any], profiles: Path) -> list[str]:
    out = ["## 2. Heartbeat ingest: vmhealth exporter vs Prometheus Pushgateway", "",
           "`bench/ingest_rate.py`. One load generator (`bench/loadgen.py`: keep-alive connections, closed loop, "
           "one asyncio loop) on the same machine as the server, the same concurrency, alternately: our "
           "`POST /api/health/report` with the original agent's JSON, and Debian's `prometheus-pushgateway` "
           "(persistence off) `POST /metrics/job/vmhealth/instance/<vmid>` with the same information as text "
           f"format. {data['guests']:,} guests, one after another.", "",
           "| connections | target | reports/s | p50 ms | p99 ms | failed | vmhealth / Pushgateway |",
           "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in data["rows"]:
        ratio = f"{_f(row['vs_pushgateway'])}x" if "vs_pushgateway" in row else ""
        out.append(f"| {row['connections']} | {row['target']} | {_f(row['rate'], 0)} | {_f(row['median_ms'])} | "
                   f"{_f(row['p99_ms'])} | {row['failed']} | {ratio} |")
    best = data.get("best_under_50ms_p99")
    ratios = [r["vs_pushgateway"] for r in data["rows"] if "vs_pushgateway" in r]
    best_rate = best["rate"] if best else 0.0
    out += ["", "Goals:", "",
            f"- ≥ 3,000 reports/s with p99 < 50 ms: "
            f"{_verdict(best_rate >= 3000, f'{_f(best_rate, 0)}/s, {_f(100 - 100 * best_rate / 3000, 0)} % short')}"
            + (f"; best {_f(best_rate, 0)}/s at {best['connections']} connections, enough for "
               f"**{best['guests_at_30s']:,} guests reporting every 30 s**." if best else "."),
            f"- ≥ 10x Pushgateway at every concurrency: {_verdict(min(ratios, default=0) >= 10, 'below 10x')}; "
            f"measured {', '.join(_f(x) + 'x' for x in ratios)}."]
    if best_rate < 3000:
        busy = _busy(profiles, "ingest_vmhealth")
        out += ["", f"*What limits it:* {_f(100 - 100 * best_rate / 3000, 0)} % short of 3,000/s. One gunicorn "
                "process (the state lives in memory) does the HTTP parsing, the gthread worker's hand-offs and the "
                "report's checks under one GIL (the ordinary report already skips Flask, `FastReports`), while "
                "the load generator takes the other core. "
                + (f"During the profiled level, {busy}. " if busy else "")
                + "Most samples are gunicorn's own HTTP handling (`handle_request`, its `Parser` and `Request`), "
                "more than the report's checks: a leaner HTTP front for the report path, or several processes "
                "sharing the state, is the next step."]
        out += _profile(profiles, "ingest_vmhealth")
    return [*out, ""]


def _agent(data: dict[str, Any], _: Path) -> list[str]:
    out = ["## 3. Agent footprint: vmhealth agent vs node_exporter", "",
           "`bench/agent_footprint.py`. Each program alone; resident memory at the end, CPU (user + system) per "
           "collection cycle over the measured cycles after a warm-up: the agent pushing to a receiver (push; and "
           "to two exporters in `agent.exporter_urls`, one of them down), "
           "the agent and Debian's `prometheus-node-exporter` (default collectors) scraped (pull).", "",
           "| program | RSS MiB | CPU ms per cycle | cycles |", "| --- | ---: | ---: | ---: |"]
    for row in data["programs"]:
        out.append(f"| {row['program']} | {_f(row['rss_bytes'] / 2**20)} | {_f(row['cpu_ms_per_cycle'], 2)} | "
                   f"{row['cycles']} |")
    node = next((r for r in data["programs"] if r["program"].startswith("node_exporter")), None)
    out += ["", "Goals: RSS ≤ node_exporter's, CPU per cycle ≤ node_exporter's per scrape.", ""]
    if node:
        for row in data["programs"]:
            if row is node:
                continue
            rss_ok = row["rss_bytes"] <= node["rss_bytes"]
            cpu_ok = row["cpu_ms_per_cycle"] <= node["cpu_ms_per_cycle"]
            out.append(f"- {row['program']}: RSS {_verdict(rss_ok, _f(row['rss_bytes'] / 2**20) + ' MiB')} "
                       f"({_f(row['rss_bytes'] / node['rss_bytes'], 2)}x node_exporter's), CPU "
                       f"{_verdict(cpu_ok, _f(row['cpu_ms_per_cycle'], 2) + ' ms')} "
                       f"({_f(node['cpu_ms_per_cycle'] / max(row['cpu_ms_per_cycle'], 1e-9))}x less).")
    return [*out, ""]


def _webhook(data: dict[str, Any], profiles: Path) -> list[str]:
    lat = data["latency"]["receive_to_reset"]
    reply = data["latency"]["reply"]
    out = ["## 4. Webhook: receive → Proxmox reset, and a 1,000-alert notification", "",
           "`bench/webhook_latency.py`. `vmhealth webhook` (gunicorn, SQLite) against the simulator; rate limits "
           "off, every other policy check on, including the live-state reads. Latency: one VMHung notification "
           "at a time, each for another guest, from sending the POST to the simulator receiving "
           "`POST …/status/reset` (its task log, to the microsecond).", "",
           "| measurement | n | p50 ms | p95 ms | p99 ms |", "| --- | ---: | ---: | ---: | ---: |",
           f"| POST /alerts answered (recorded) | {reply['n']} | {_f(reply['median_ms'])} | {_f(reply['p95_ms'])} | "
           f"{_f(reply['p99_ms'])} |",
           f"| alert received → reset call | {lat['n']} | {_f(lat['median_ms'])} | {_f(lat['p95_ms'])} | "
           f"{_f(lat['p99_ms'])} |", "",
           "| one notification with | policy | recorded (reply) s | every alert decided s | Proxmox calls "
           "| goal < 2 s |",
           "| --- | --- | ---: | ---: | ---: | --- |"]
    for row in data["bulk"]:
        out.append(f"| {row['alerts']:,} alerts | {row['mode']} | {_f(row['recorded_s'], 2)} | "
                   f"{_f(row['decided_s'], 2)} | {row['proxmox_calls']:,} | "
                   f"{_verdict(row['decided_s'] < 2, _f(row['decided_s'] - 2, 2) + ' s over')} |")
    out += ["", "The kill-switch row decides without a Proxmox call (the goal's \"Proxmox calls excluded\"); the "
            "dry-run row runs every check including three Proxmox reads and the guest-agent ping per alert, with "
            "`max_concurrent_actions` at its default of 2, and is shown for scale."]
    kill = next((row for row in data["bulk"] if row["mode"] == "kill switch"), None)
    if kill:
        met = kill["decided_s"] < 2
        after = kill["decided_s"] - kill["recorded_s"]
        out += ["", f"*1,000 alerts decided in < 2 s{'' if met else ', by how much'}:* {_f(kill['decided_s'], 2)} s"
                + ("" if met else f", {_f(kill['decided_s'] - 2, 2)} s over")
                + f"; recording all of them (one transaction, then the reply) took {_f(kill['recorded_s'], 2)} s, "
                f"deciding them after the reply {_f(after, 2)} s ({_f(1000 * after / kill['alerts'], 2)} ms each). "
                "The worker decides the refusals that need the database only (kill switch, quarantine, attempts "
                "used up, cooldowns) while it claims, up to 100 events in one SQLite write transaction, each "
                "history row written with its finished event; only the events that need Proxmox take the "
                "pool's turns. The webhook's `/metrics`, which this benchmark reads every 0.1 s to count the "
                "decisions, reads the open incidents' counts as plain columns."
                + " Recording inserts each alert, and each incident it opens, with one `INSERT … ON CONFLICT DO "
                "NOTHING` statement: a repeat Alertmanager already sent, or a row another replica inserted "
                "first, is passed over without a savepoint and without undoing the rest of the notification."
                + ("" if met else " The profile below shows where the time goes.")]
        if not met:
            out += _profile(profiles, "webhook_bulk", 30)
    return [*out, ""]


def _detection(data: dict[str, Any], _: Path) -> list[str]:
    s = data["settings"]
    k = data["scale"]
    timings = "production timings" if k == 1 else f"production timings divided by **{k:g}**"
    out = ["## 5. Detection latency in the real stack", "",
           "`bench/detection_latency.py`. The whole product on loopback (`vmhealth.stack`: simulator, exporter, "
           f"Prometheus, Alertmanager, webhook) with the default configuration and {timings}: agents every "
           f"{_f(s['agent_interval'])} s, poll, scrape and evaluation every {_f(s['scrape_interval'])} s, stale "
           f"timeout {_f(s['stale_timeout'])} s, I/O window {_f(s['io_window'])} s, VMHung `for:` "
           f"{_f(s['vmhung_for'])} s, Alertmanager `group_wait` {_f(s['group_wait'])} s, and a Proxmox agent/ping "
           f"that waits {_f(s['agent_ping_delay'])} s for a guest agent that does not answer. Each hung guest is "
           "frozen (no heartbeats, no disk or network I/O, no guest-agent answer); measured from the last "
           "heartbeat the exporter accepted to the reset request the simulator received.", "",
           "| guest | last heartbeat → reset s |", "| --- | ---: |"]
    for row in data["rows"]:
        out.append(f"| {row['vmid']} | {_f(row['seconds'])} |")
    v = data["vsphere_s"]
    out += ["", "| | s |", "| --- | ---: |",
            f"| vmhealth, median | {_f(data['median_s'])} |",
            f"| vmhealth, slowest | {_f(data['max_s'])} |",
            "| vmhealth, this design's worst case (max(stale timeout, agent interval + poll + I/O window) + "
            f"evaluation + `for:` + group_wait + guest-agent ping) | {_f(data['design_worst_s'])} |",
            f"| goal | ≤ {_f(150 / k)} median, ≤ {_f(180 / k)} worst |",
            f"| original design's worst case (stale timeout 5m + 60 s stale-check cycle) | "
            f"{_f(data['original_worst_s'])} |",
            f"| vSphere HA VM Monitoring: failure declared, then a reset once no I/O for {_f(v['io_window'])} s | "
            f"{_f(v['declared_min'])} to {_f(v['declared_max'])}, and ≥ {_f(v['io_window'])} |", ""]
    silent = data.get("agent_dead", [])
    if silent:
        out += [f"In the same run, {len(silent)} guest(s) lost only their vmhealth agent and kept doing I/O "
                "(QEMU guest agent: " + ", ".join(f"{r['vmid']} {r['guest_agent']}" for r in silent) + "). "
                f"Resets of them: **{data['wrongful_resets']}**; `VMAgentSilent` firing for "
                f"{sum(1 for r in silent if r['agent_silent_firing'])} of {len(silent)}.", ""]
    met = data["median_s"] * k <= 150 and data["max_s"] * k <= 180
    out += [f"vmhealth takes {_f(data['vs_original_worst'], 2)}x the original's worst case; the goal is "
            + ("met." if met else "**missed**.") + " The stale timeout (90 s: three missed 30 s heartbeats) "
            "is most of it; a hung guest's I/O stops with its heartbeats, so the 60 s I/O window is "
            "mostly over by then (docs/alerting.md has the budget).", ""]
    return out


def _slow_clients(data: dict[str, Any], _: Path) -> list[str]:
    out = ["## 6. One hostile address: slow and idle connections", "",
           "`bench/slow_clients.py`. `vmhealth exporter` and `vmhealth webhook` with their default threads and "
           f"limits. 127.0.0.2 holds {data['connections']} connections to the server, reopening any that are cut: "
           "*trickle* sends a request line and then one byte every 2 s, *idle* sends nothing. Meanwhile 127.0.0.1 "
           "sends, twice a second for "
           f"{_f(data['seconds'], 0)} s per condition, a heartbeat (exporter) or an Alertmanager notification "
           "(webhook), a scrape of `/metrics` and a `/healthz` probe. Before the worker read requests in its event "
           "loop, 200 such connections left a heartbeat and `POST /alerts` unanswered for more than 120 s "
           "(docs/security.md).", "",
           "| server | 127.0.0.2 holds | request | median ms | p99 ms | max ms | p99 / quiet |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for row in data["rows"]:
        held = "nothing" if row["condition"] == "quiet" else f"{data['connections']} {row['condition']}"
        for name, stats in row["requests"].items():
            out.append(f"| {row['target']} | {held} | {name} | {_f(stats['median_ms'])} | {_f(stats['p99_ms'])} | "
                       f"{_f(stats['max_ms'])} | {_f(row['p99_ratio_to_quiet'][name], 2)} |")
    slowest = max(r["max_ms"] for r in data["rows"])
    out += ["", f"Slowest answer: {_f(slowest)} ms; goal ≤ {_f(1000 * data['goal_seconds'], 0)} ms: "
            f"{_verdict(data['goal_met'], 'an answer took longer')}.", ""]
    return out


SECTIONS = {"scrape_cost": _scrape, "ingest_rate": _ingest, "agent_footprint": _agent,
            "webhook_latency": _webhook, "detection_latency": _detection, "slow_clients": _slow_clients}


def render(data: dict[str, Any], profiles: Path) -> str:
    out = _header(data)
    out += ["| benchmark | script | took |", "| --- | --- | ---: |"]
    for name, result in data["results"].items():
        out.append(f"| {name.replace('_', ' ')} | `bench/{name}.py` | {_f(result['duration_s'], 0)} s |")
    out.append("")
    for name, section in SECTIONS.items():
        if name in data["results"]:
            out += section(data["results"][name], profiles)
    out += ["## Reproduce", "", "```sh", "make bench                                   # all of the above, "
            "rewrites this page", "python bench/run_all.py --only ingest_rate     # one script again, the page "
            "from the rest of the last run", "python bench/run_all.py --smoke              # seconds: every script "
            "runs (what CI does)", "```", ""]
    return "\n".join(out)
