"""`vmhealth demo` as a newcomer runs it: a real subprocess that starts the whole stack, prints the three
scenarios' timelines in order, and leaves no process and no listening port behind, whether it ends by
itself or by Ctrl-C / SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers.requirements import binary
from vmhealth.stack.processes import wait_for

TIMELINE_LINE = re.compile(r"^\d\d:\d\d:\d\d  \+ *\d+\.\ds  \S")
SCENARIO_1 = ["hangs: Proxmox still says running", "heartbeat stopped", "stale timeout", "VMHung pending",
              "VMHung firing", "webhook decision: reset", "reset sent: UPID:", "heartbeat back", "VMHung resolved",
              "incident closed"]
SCENARIO_2 = ["resets will time out", "VMHung firing", "attempt 1 of 2 failed", "attempt 2 of 2 failed",
              "quarantined", "VMResetFailed firing"]
SCENARIO_3 = ["vmhealth agent dies", "heartbeat stopped", "VMAgentSilent firing (warning): heartbeat stale, but "
              "Proxmox shows it writing and sending", "no reset: VMHung never fired", "agent back",
              "VMAgentSilent resolved; nothing was reset"]


class Demo:
    """`python -m vmhealth demo` with its output collected and every descendant process remembered."""

    def __init__(self, workdir: Path, *extra: str):
        binary("prometheus"), binary("alertmanager")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VMHEALTH_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vmhealth", "demo", "--workdir", str(workdir), "--nodes", "2", "--guests", "8",
             "--step-timeout", "60", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**env, "PYTHONUNBUFFERED": "1"},
            start_new_session=True)  # its own process group, like a shell job, for Ctrl-C below
        self.lines: list[str] = []
        self.children: dict[int, psutil.Process] = {}
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        threading.Thread(target=self._watch, daemon=True).start()

    def signal(self, sig: signal.Signals) -> None:
        """SIGINT as a terminal's Ctrl-C sends it (to the whole foreground group), others to the demo alone."""
        if sig == signal.SIGINT:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def _watch(self) -> None:
        while self.process.poll() is None:
            try:
                for child in psutil.Process(self.process.pid).children(recursive=True):
                    self.children.setdefault(child.pid, child)
            except psutil.Error:
                pass
            time.sleep(0.2)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait(self, seconds: float) -> int:
        try:
            return self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"vmhealth demo did not finish within {seconds:g}s; output:\n{self.output}")

    def kill(self) -> None:
        for child in self.children.values():
            with contextlib.suppress(psutil.Error):
                child.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def ports(self) -> list[int]:
        return [int(port) for port in re.findall(r"https?://127\.0\.0\.1:(\d+)", self.output)]

    def assert_nothing_left(self, started: int = 4) -> None:
        self.reader.join(timeout=10)  # the output up to the demo's end
        assert len(self.children) >= started, f"saw only {len(self.children)} started processes:\n{self.output}"
        alive = [c for c in self.children.values() if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert not alive, "left running: " + "; ".join(
            f"{c.pid} (parent {c.ppid()}, {c.status()}): {' '.join(c.cmdline())[:200]}" for c in alive)
        ports = self.ports()
        assert len(set(ports)) >= 5 or not started, self.output
        for port in set(ports):
            with socket.socket() as sock:
                assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listens"
        assert "Traceback" not in self.output, self.output


def in_order(text: str, phrases: list[str]) -> None:
    position = 0
    for phrase in phrases:
        found = text.find(phrase, position)
        assert found >= 0, f"{phrase!r} missing after position {position} in:\n{text}"
        position = found + len(phrase)


@pytest.mark.binaries
@pytest.mark.slow
def test_three_scenarios_in_order_then_clean_exit(tmp_path: Path) -> None:
    demo = Demo(tmp_path / "demo", "--scenarios-only")
    try:
        code = demo.wait(300)
    finally:
        if demo.process.poll() is None:
            demo.kill()
    assert code == 0, demo.output
    text = demo.output
    first, _, rest = text.partition("== Scenario 2")
    second, _, third = rest.partition("== Scenario 3")
    assert third, text
    in_order(first, SCENARIO_1)
    in_order(second, SCENARIO_2)
    in_order(third, SCENARIO_3)
    assert first.count("reset sent: UPID:") == 1 and "attempt 2" not in first, first
    assert "VMHung" not in third.replace("VMHung never fired", ""), third
    timeline = [line for line in demo.lines if TIMELINE_LINE.match(line)]
    assert len(timeline) == len(SCENARIO_1) + len(SCENARIO_2) + len(SCENARIO_3), text
    seconds = [float(re.search(r"\+ *(\d+\.\d)s", line).group(1)) for line in timeline]  # type: ignore[union-attr]
    assert seconds[:len(SCENARIO_1)] == sorted(seconds[:len(SCENARIO_1)]), text
    assert re.search(r"hang -> reset \d+\.\ds, hang -> resolved \d+\.\ds", text), text
    assert (tmp_path / "demo" / "webhook.log").exists()
    demo.assert_nothing_left()


@pytest.mark.binaries
@pytest.mark.slow
@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGTERM], [signal.SIGINT, signal.SIGINT]],
                         ids=["ctrl-c", "sigterm", "ctrl-c-twice"])
def test_signal_stops_everything(tmp_path: Path, signals: list[signal.Signals]) -> None:
    demo = Demo(tmp_path / "demo")
    try:
        wait_for(lambda: "== Scenario 1" in demo.output or demo.process.poll() is not None, 60,
                 "the demo's stack to be up")
        assert demo.process.poll() is None, demo.output
        for sig in signals:
            demo.signal(sig)
            time.sleep(0.3)
        code = demo.wait(40)
    finally:
        if demo.process.poll() is None:
            demo.kill()
    if len(signals) == 1:
        assert code == 0, demo.output
        assert f"{signals[0].name} received; every process it started is stopped" in demo.output
    else:
        assert code in (0, 130), demo.output
    demo.assert_nothing_left()


@pytest.mark.binaries
@pytest.mark.slow
def test_ctrl_c_while_starting_stops_what_was_started(tmp_path: Path) -> None:
    demo = Demo(tmp_path / "demo")
    try:
        wait_for(lambda: "starting a simulated cluster" in demo.output, 30, "the demo to start")
        time.sleep(1.0)  # the simulator and the first processes are up, the rest are starting
        demo.signal(signal.SIGINT)
        code = demo.wait(40)
    finally:
        if demo.process.poll() is None:
            demo.kill()
    assert code == 0, demo.output
    assert "SIGINT received; every process it started is stopped" in demo.output
    demo.assert_nothing_left(started=0)


def test_refuses_a_used_workdir_and_touches_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vmhealth.cli import main

    (tmp_path / "webhook.db").write_bytes(b"a previous run's history")
    assert main(["demo", "--workdir", str(tmp_path), "--scenarios-only"]) == 2
    assert f"--workdir {tmp_path} is not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["webhook.db"]
    assert (tmp_path / "webhook.db").read_bytes() == b"a previous run's history"


@pytest.mark.parametrize("option", [["--guests", "2"], ["--nodes", "0"]])
def test_refuses_a_cluster_too_small(option: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from vmhealth.cli import main

    assert main(["demo", *option, "--scenarios-only"]) == 2
    assert "--guests must be at least 3 and --nodes at least 1" in capsys.readouterr().err
