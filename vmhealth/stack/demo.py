"""Watch vmhealth find a hung guest and reset it, on this machine, in about a minute.

Starts on 127.0.0.1 a simulated Proxmox cluster whose guests run simulated agents, the exporter, the
webhook (SQLite), and the real Prometheus and Alertmanager binaries, with demo-only timings (2s
heartbeats, a 10s stale timeout, rule `for:` durations divided by 12, a 15s cooldown, 2 attempts).

Scenario 1 hangs one guest and prints, as it happens: heartbeat stopped -> VMHung pending -> firing
-> the webhook's decision -> the reset's UPID -> heartbeat back -> resolved. Scenario 2 makes a
guest that resets do not fix: attempts -> quarantine -> VMResetFailed. Scenario 3 kills only the
vmhealth agent in a guest that keeps working: VMAgentSilent, and no reset, with the reason. Then
everything keeps running, with its URLs printed, until Ctrl-C, which stops every process the demo
started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

MAX_ATTEMPTS = 2  # the demo policy's attempts before quarantine (production default: 3)
POLL_SECONDS = 0.5


class DemoStopped(BaseException):
    """Ctrl-C or SIGTERM: leave every `with` block, so that each started process is stopped."""


class DemoFailed(Exception):
    """A step of a scenario did not happen in time, or a process of the stack exited."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", metavar="DIR",
                        help="a new or empty folder for configurations, databases and every process's log "
                        "(default: a new folder in /tmp, removed at a clean exit)")
    parser.add_argument("--nodes", type=int, default=3, help="simulated Proxmox nodes (default: %(default)s)")
    parser.add_argument("--guests", type=int, default=20,
                        help="simulated QEMU guests, each with an agent (default: %(default)s; at least 3)")
    parser.add_argument("--step-timeout", type=float, default=90.0, metavar="SECONDS",
                        help="give up when a step of a scenario does not happen within this (default: %(default)s)")
    parser.add_argument("--scenarios-only", "--no-wait", action="store_true",
                        help="exit after the three scenarios instead of running until Ctrl-C")


@dataclass
class Step:
    """One line of the timeline: `check` returns its text once the event has happened, else None."""

    name: str
    check: Callable[[Observation], str | None]


class Observation:
    """What the demo can see of one guest at one moment, each from the component that knows it."""

    def __init__(self, stack: Any, vmid: int):
        self.vmid = vmid
        self.vm = _get_json(f"{stack.urls['exporter']}/api/vms/{vmid}") or {}
        alerts = _safe(stack.alerts)
        self.alerts_read = alerts is not None  # an unanswered query must not look like a resolved alert
        self.alerts = {a["labels"].get("alertname"): a for a in alerts or [] if a["labels"].get("vmid") == str(vmid)}
        self.history = list(reversed(_safe(lambda: stack.resets(vmid)) or []))  # oldest first
        self.tasks = _safe(lambda: stack.sim.resets(vmid)) or []
        self._webhook = stack.urls["webhook"]

    def attempts(self) -> list[dict[str, Any]]:
        return [row for row in self.history if row.get("attempt") and row["action"] in ("reset", "reboot")]

    def quarantined(self) -> bool:
        import requests
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = requests.get(f"{self._webhook}/metrics", timeout=5).text
        except requests.RequestException:
            return False
        for family in text_string_to_metric_families(text):
            if family.name == "vmhealth_remediation_quarantined":
                return any(s.labels.get("vmid") == str(self.vmid) and s.value == 1 for s in family.samples)
        return False


def _safe(call: Callable[[], Any]) -> Any:
    """A reading, or None while a component does not answer (the step's timeout reports it)."""
    try:
        return call()
    except Exception:  # any failure to read is "not seen yet"
        return None


def _get_json(url: str) -> Any:
    import requests

    return _safe(lambda: requests.get(url, timeout=5).json())


def _epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None


class Timeline:
    """Prints each event with the wall-clock time and the seconds since the scenario's fault began."""

    def __init__(self, out: Any = None):
        self.out = out or sys.stdout
        self.started = time.time()
        self.times: dict[str, float] = {}

    def begin(self, title: str) -> None:
        self.started = time.time()
        self.times = {}
        print(f"\n== {title}", file=self.out, flush=True)

    def line(self, name: str, text: str) -> None:
        now = time.time()
        self.times[name] = now - self.started
        stamp = datetime.fromtimestamp(now).strftime("%H:%M:%S")
        print(f"{stamp}  +{now - self.started:5.1f}s  {text}", file=self.out, flush=True)


def follow(stack: Any, vmid: int, steps: list[Step], timeline: Timeline, timeout: float) -> None:
    """Print each step when it is seen, in order; DemoFailed names the step that did not happen."""
    for step in steps:
        deadline = time.monotonic() + timeout
        while True:
            _check_processes(stack)
            seen = Observation(stack, vmid)
            text = step.check(seen)
            if text:
                timeline.line(step.name, text)
                break
            if time.monotonic() > deadline:
                raise DemoFailed(f"step '{step.name}' did not happen within {timeout:g}s (guest {vmid}); "
                                 f"{_describe(seen)}; every process's log is in {stack.workdir}")
            time.sleep(POLL_SECONDS)


def _describe(seen: Observation) -> str:
    """What was seen last, for the message of a step that did not happen."""
    alerts = ", ".join(f"{name} {a.get('state')}" for name, a in seen.alerts.items()) or "none"
    rows = "; ".join(f"{r['action']} {r['outcome']} {r.get('error') or r.get('reason') or ''}".strip()
                     for r in seen.history[-3:]) or "none"
    return f"last heartbeat {seen.vm.get('lastHeartbeat')}, alerts: {alerts}, webhook history: {rows}"


def wait_reporting(stack: Any, vmids: list[int], timeout: float) -> None:
    """Before a fault: each guest's heartbeats reach the exporter, so that their stopping can be seen."""

    def reporting(vmid: int) -> bool:
        vm = _get_json(f"{stack.urls['exporter']}/api/vms/{vmid}") or {}
        return bool(vm.get("lastHeartbeat")) and not vm.get("isDown")

    deadline = time.monotonic() + timeout
    while not all(reporting(vmid) for vmid in vmids):
        _check_processes(stack)
        if time.monotonic() > deadline:
            raise DemoFailed(f"guests {vmids} did not report to the exporter within {timeout:g}s; "
                             f"every process's log is in {stack.workdir}")
        time.sleep(POLL_SECONDS)


def _check_processes(stack: Any) -> None:
    for name, process in stack.processes.items():
        if not process.running:
            raise DemoFailed(f"{name} exited; its log is {process.log_path}:\n{process.tail(1500)}")


# --- the three scenarios ----------------------------------------------------------------------

def _alert_state(name: str, states: tuple[str, ...]) -> Callable[[Observation], dict[str, Any] | None]:
    return lambda o: o.alerts.get(name) if o.alerts.get(name, {}).get("state") in states else None


def hang_scenario(stack: Any, vmid: int, timeline: Timeline, timeout: float, stale: float, hold: float) -> None:
    """A guest hangs; vmhealth resets it once and the alert resolves."""
    name = stack.sim.guest(vmid)["name"]
    timeline.begin(f"Scenario 1: guest {vmid} ({name}) hangs; vmhealth resets it")
    stack.sim.hang(vmid)
    timeline.line("hang", f"guest {vmid} hangs: Proxmox still says running, but no heartbeat, disk write or "
                          f"network packet comes out of it (vmhealth sim ctl hang {vmid})")
    hung_at = time.time()
    interval = stack.settings.agent_interval
    pending, firing = _alert_state("VMHung", ("pending", "firing")), _alert_state("VMHung", ("firing",))

    def heartbeat_stopped(o: Observation) -> str | None:
        last = _epoch(o.vm.get("lastHeartbeat"))
        if last is None or time.time() - last < 2 * interval + 1:
            return None
        return f"heartbeat stopped: the last one reached the exporter at {_clock(last)} ({interval:g}s interval)"

    def decided(o: Observation) -> str | None:
        rows = o.attempts()
        if not rows:
            return None
        row = rows[0]
        return (f"webhook decision: {row['action']} guest {vmid} on {row['node']} (attempt {row['attempt']} "
                f"of {MAX_ATTEMPTS}; {_evidence_words(row.get('evidence') or {})})")

    def reset_done(o: Observation) -> str | None:
        rows = [r for r in o.attempts() if r["outcome"] != "pending"]
        done = [t for t in o.tasks if t.get("status") == "stopped"]
        if not rows or not done:
            return None
        return f"reset sent: {rows[0]['upid']} -> {rows[0]['exitstatus']} (webhook history: {rows[0]['outcome']})"

    def heartbeat_back(o: Observation) -> str | None:
        last = _epoch(o.vm.get("lastHeartbeat"))
        if last is None or last <= hung_at or o.vm.get("isDown"):
            return None
        return f"heartbeat back at {_clock(last)}: the guest rebooted, uptime {o.vm.get('uptime')}s"

    timeline_steps = [
        Step("heartbeat stopped", heartbeat_stopped),
        Step("stale", lambda o: o.vm.get("isDown") and f"heartbeat older than the {stale:g}s stale timeout: "
             f"the exporter marks guest {vmid} down"),
        Step("pending", lambda o: pending(o) and f"Prometheus: VMHung pending (it must hold for {hold:g}s)"),
        Step("firing", lambda o: firing(o) and "Prometheus: VMHung firing -> Alertmanager -> webhook"),
        Step("decision", decided),
        Step("reset", reset_done),
        Step("heartbeat back", heartbeat_back),
        Step("resolved", lambda o: o.alerts_read and not o.alerts.get("VMHung") and "Prometheus: VMHung resolved"),
        Step("closed", lambda o: any(r["outcome"] == "resolved" for r in o.history)
             and "webhook: incident closed (Alertmanager sent the resolved notification)"),
    ]
    follow(stack, vmid, timeline_steps, timeline, timeout)


def _evidence_words(evidence: dict[str, Any]) -> str:
    """The history row's evidence, as the demo's timeline says it."""
    words = ["running, unlocked, node online, quorate"]
    if isinstance(evidence.get("io_idle_seconds"), int | float):
        words.append(f"no I/O for {evidence['io_idle_seconds']:.0f}s")
    if evidence.get("guest_agent"):
        words.append(f"guest agent {evidence['guest_agent']}")
    return ", ".join(words)


def stuck_scenario(stack: Any, vmid: int, timeline: Timeline, timeout: float) -> None:
    """A guest that resets do not fix: the attempts run out, the guest is quarantined, a person is paged."""
    name = stack.sim.guest(vmid)["name"]
    timeline.begin(f"Scenario 2: guest {vmid} ({name}) hangs and resets do not help")
    stack.sim.stuck(vmid)
    timeline.line("stuck", f"guest {vmid} hangs, and its resets will time out in QEMU (vmhealth sim ctl stuck {vmid})")

    def attempt_failed(number: int) -> Callable[[Observation], str | None]:
        def check(o: Observation) -> str | None:
            rows = [r for r in o.attempts() if r["attempt"] == number and r["outcome"] != "pending"]
            if not rows:
                return None
            why = rows[0]["error"] or rows[0]["exitstatus"]
            return f"webhook: reset attempt {number} of {MAX_ATTEMPTS} {rows[0]['outcome']}: {why}"
        return check

    steps = [
        Step("firing", lambda o: _alert_state("VMHung", ("firing",))(o) and "Prometheus: VMHung firing"),
        *[Step(f"attempt {n}", attempt_failed(n)) for n in range(1, MAX_ATTEMPTS + 1)],
        Step("quarantined", lambda o: o.quarantined() and f"webhook: guest {vmid} quarantined; no more resets "
             f"until a person runs `vmhealth release {vmid}`"),
        Step("VMResetFailed", lambda o: _alert_state("VMResetFailed", ("firing",))(o)
             and "Prometheus: VMResetFailed firing (critical: a person must look at the guest)"),
    ]
    follow(stack, vmid, steps, timeline, timeout)


def agent_dead_scenario(stack: Any, vmid: int, timeline: Timeline, timeout: float, quiet: float) -> None:
    """vmhealth's agent dies in a guest that keeps working: a warning, and no reset, for a stated reason."""
    name = stack.sim.guest(vmid)["name"]
    timeline.begin(f"Scenario 3: the vmhealth agent in guest {vmid} ({name}) dies; the guest keeps working")
    stack.sim.agent_dead(vmid)
    timeline.line("agent dead", f"guest {vmid}'s vmhealth agent dies: no more heartbeats, but the guest goes on "
                                f"writing and sending (vmhealth sim ctl agent-dead {vmid})")
    interval = stack.settings.agent_interval
    silent_since: list[float] = []

    def never_reset(o: Observation) -> None:
        acted = [r for r in o.history if r.get("action")] + o.tasks
        if acted or o.alerts.get("VMHung"):
            raise DemoFailed(f"guest {vmid} works and only its agent died, yet vmhealth judged it hung; "
                             f"{_describe(o)}; every process's log is in {stack.workdir}")

    def heartbeat_stopped(o: Observation) -> str | None:
        never_reset(o)
        last = _epoch(o.vm.get("lastHeartbeat"))
        if last is None or time.time() - last < 2 * interval + 1:
            return None
        return f"heartbeat stopped: the last one reached the exporter at {_clock(last)}"

    def agent_silent(o: Observation) -> str | None:
        never_reset(o)
        alert = _alert_state("VMAgentSilent", ("firing",))(o)
        if not alert:
            return None
        silent_since.append(time.time())
        rate = _io_rate(stack, vmid)
        seen = f"Proxmox shows it writing and sending {rate:,.0f} B/s" if rate is not None else "Proxmox shows I/O"
        return f"Prometheus: VMAgentSilent firing (warning): heartbeat stale, but {seen}"

    def no_reset(o: Observation) -> str | None:
        never_reset(o)
        if time.time() - silent_since[0] < quiet:
            return None
        return (f"no reset: VMHung never fired, because a guest that does I/O is not hung; the webhook's history "
                f"for guest {vmid} is empty after {quiet:.0f}s more")

    def heartbeat_back(o: Observation) -> str | None:
        never_reset(o)
        last = _epoch(o.vm.get("lastHeartbeat"))
        if last is None or o.vm.get("isDown") or last < silent_since[0]:
            return None
        return f"agent back (vmhealth sim ctl agent-alive {vmid}): heartbeat at {_clock(last)}"

    follow(stack, vmid, [Step("heartbeat stopped", heartbeat_stopped), Step("agent silent", agent_silent),
                         Step("no reset", no_reset)], timeline, timeout)
    stack.sim.agent_alive(vmid)
    follow(stack, vmid, [
        Step("heartbeat back", heartbeat_back),
        Step("resolved", lambda o: o.alerts_read and not o.alerts.get("VMAgentSilent")
             and "Prometheus: VMAgentSilent resolved; nothing was reset"),
    ], timeline, timeout)


def _io_rate(stack: Any, vmid: int) -> float | None:
    """The guest's disk writes + network transmit in B/s, as Prometheus has them from Proxmox's counters."""
    rows = _safe(lambda: stack.query(f'cluster_vmid:vmhealth_pve_guest_io_bytes:rate1m{{vmid="{vmid}"}}'))
    return float(rows[0]["value"][1]) if rows else None


def rule_for(alert: str) -> float:
    """The shipped `for:` of an alert, in seconds."""
    import yaml

    from vmhealth.bundled import bundled_file
    from vmhealth.durations import parse_duration

    document = yaml.safe_load(bundled_file("prometheus/rules/vmhealth-alerts.yml").read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                return parse_duration(rule.get("for", "0s"))
    raise KeyError(alert)


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S")


# --- the command ------------------------------------------------------------------------------

@contextmanager
def _signals_stop() -> Iterator[None]:
    """SIGINT/SIGTERM raise DemoStopped once; a second one kills what is left and exits at once."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            raise DemoStopped(signal.Signals(signum).name)
        print("\nvmhealth demo: stopping at once", file=sys.stderr, flush=True)
        import psutil

        for child in psutil.Process().children(recursive=True):  # gunicorn workers too, not only the masters
            with suppress(psutil.Error):
                child.kill()
        os._exit(130)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def demo_settings(nodes: int, guests: int) -> Any:
    from vmhealth.stack.running import StackSettings

    return StackSettings(nodes=nodes, guests=guests, repeat_interval="5s",
                         policy={"max_attempts": MAX_ATTEMPTS, "cooldown": "15s"})


def run(args: argparse.Namespace) -> int:
    if args.guests < 3 or args.nodes < 1:
        print("vmhealth demo: --guests must be at least 3 and --nodes at least 1", file=sys.stderr)
        return 2
    if args.workdir and Path(args.workdir).exists() and any(Path(args.workdir).iterdir()):
        print(f"vmhealth demo: --workdir {args.workdir} is not empty; a previous run's databases would change "
              "this one (its quarantines, its history), so give a new or empty folder", file=sys.stderr)
        return 2
    from vmhealth.stack.binaries import find_binary

    missing = [name for name in ("prometheus", "alertmanager") if not find_binary(name)]
    if missing:
        print(f"vmhealth demo: {' and '.join(missing)} not found; install them first: "
              "apt-get install prometheus prometheus-alertmanager", file=sys.stderr)
        return 2
    import logging

    if args.log_level == "info":  # the simulator runs in this process; its request log would bury the timeline
        logging.getLogger().setLevel(logging.WARNING)
    keep = args.workdir is not None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vmhealth-demo-"))
    with _signals_stop():
        try:
            code = _run(args, workdir)
        except DemoStopped as stopped:
            print(f"\nvmhealth demo: {stopped} received; every process it started is stopped.", flush=True)
            code = 0
        except DemoFailed as exc:
            print(f"\nvmhealth demo: {exc}", file=sys.stderr, flush=True)
            return 1
        except (RuntimeError, FileNotFoundError) as exc:
            print(f"\nvmhealth demo: could not start: {exc}\n(logs in {workdir})", file=sys.stderr, flush=True)
            return 1
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return code


def _run(args: argparse.Namespace, workdir: Path) -> int:
    from vmhealth.durations import parse_duration
    from vmhealth.stack.running import running_stack

    settings = demo_settings(args.nodes, args.guests)
    print(f"vmhealth demo: starting a simulated cluster ({args.nodes} nodes, {args.guests} guests with agents), "
          f"the exporter, the webhook, Prometheus and Alertmanager on 127.0.0.1 (logs in {workdir}) ...", flush=True)
    started = time.monotonic()
    with running_stack(settings, workdir) as stack:
        print(f"ready in {time.monotonic() - started:.0f}s. Demo-only timings: heartbeats every "
              f"{settings.agent_interval:g}s, stale after {settings.stale_timeout}, rules' `for:` x"
              f"{settings.rule_time_scale:.3g}, cooldown 15s, {MAX_ATTEMPTS} attempts.", flush=True)
        _print_urls(stack)
        timeline = Timeline()
        first, second, third = 100 + args.guests // 4, 100 + args.guests // 2, 100 + (3 * args.guests) // 4
        hold = max(1.0, round(rule_for("VMHung") * settings.rule_time_scale))
        wait_reporting(stack, [first, second, third], args.step_timeout)
        hang_scenario(stack, first, timeline, args.step_timeout, parse_duration(settings.stale_timeout), hold)
        reset, resolved = timeline.times["reset"], timeline.times["resolved"]
        stuck_scenario(stack, second, timeline, args.step_timeout)
        # as long again as a hung guest took from its last heartbeat to its reset in scenario 1
        agent_dead_scenario(stack, third, timeline, args.step_timeout, quiet=max(reset, 10.0))
        print(f"\nScenario 1: hang -> reset {reset:.1f}s, hang -> resolved {resolved:.1f}s. "
              f"Scenario 3: agent dead -> VMAgentSilent {timeline.times['agent silent']:.1f}s, no reset. "
              f"Guest {second} stays quarantined: vmhealth sim ctl --url https://{stack.sim.host} recover {second}; "
              f"vmhealth release {second} --config {stack.config_path}", flush=True)
        if args.scenarios_only:
            return 0
        _print_urls(stack)
        print("Everything keeps running; press Ctrl-C to stop it all.", flush=True)
        while True:
            _check_processes(stack)
            time.sleep(1)


def _print_urls(stack: Any) -> None:
    urls = stack.urls
    print(f"  Prometheus alerts  {urls['prometheus']}/alerts\n"
          f"  Alertmanager       {urls['alertmanager']}/#/alerts\n"
          f"  exporter           {urls['exporter']}/api/vms\n"
          f"  webhook history    vmhealth history --config {stack.config_path}  (GET {urls['webhook']}/api/resets "
          "needs the viewer token)\n"
          f"  simulator          https://{stack.sim.host}/_sim/state", flush=True)
