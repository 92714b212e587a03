"""py-spy on a running server while a benchmark loads it, kept as a short text summary.

By default samples are taken only while a thread holds the GIL (`--gil`): what the process spends
its CPU on, not where its idle threads wait; `gil=False` samples every thread that is not idle, so
time in system calls such as a database's fsync shows too. The summary lists functions by inclusive
and by own share of samples.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

PROFILES = Path(__file__).resolve().parent / "profiles"
RATE = 100  # samples per second
# Frames every sample passes through (thread start, the program's main): they say nothing.
_PLUMBING = ("(threading.py)", "(<frozen runpy>)", "(arbiter.py)", "(__main__.py)", "(cli.py)", "(server.py)",
             "(gunicorn_runner.py)", "(base.py)")


def _frame(text: str) -> str:
    """'function (path/file.py:12)' -> 'function (file.py)'."""
    name, _, where = text.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0].rstrip(')')})" if where else name


def summarize(raw: Path, title: str, mode: str = "--gil", top: int = 30, seconds: float = 0.0) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_frame(f) for f in stack.split(";")]
        for frame in set(frames):
            if not frame.endswith(_PLUMBING):
                inclusive[frame] += samples
        own[frames[-1]] += samples
    out = [f"# {title}", f"# py-spy record ({mode}), {total} samples"]
    if seconds > 0:
        what = "a thread held the GIL" if mode == "--gil" else "threads were busy (summed over threads)"
        out.append(f"# over {seconds:.1f} s at {RATE} samples/s: {what} {100 * total / (RATE * seconds):.0f} % "
                   "of the time")
    out += ["", "inclusive  function"]
    out += [f"{100 * n / max(total, 1):8.1f}%  {name}" for name, n in inclusive.most_common(top)]
    out += ["", "own        function"]
    out += [f"{100 * n / max(total, 1):8.1f}%  {name}" for name, n in own.most_common(top // 2)]
    return "\n".join(out) + "\n"


class Profiler:
    """`with Profiler(pid, "name", "title"):` records the server (its gunicorn worker) during the block."""

    def __init__(self, pid: int, name: str, title: str, folder: Path = PROFILES, gil: bool = True):
        children = psutil.Process(pid).children(recursive=True)
        self.pid = children[0].pid if children else pid  # gunicorn: the worker serves, the master waits
        self.raw = folder / f"{name}.raw"
        self.summary = folder / f"{name}.txt"
        self.title = title
        self.gil = gil  # False: every thread that is not idle, including time in system calls (disk writes)
        folder.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.started = 0.0

    def __enter__(self) -> Profiler:
        py_spy = Path(sys.executable).with_name("py-spy")
        self.process = subprocess.Popen([str(py_spy), "record", "-p", str(self.pid), "-r", str(RATE),
                                         *(["--gil"] if self.gil else []), "--nonblocking", "-f", "raw", "-o",
                                         str(self.raw)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.started = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        assert self.process is not None
        seconds = time.monotonic() - self.started
        self.process.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.raw.exists():
            self.summary.write_text(summarize(self.raw, self.title, "--gil" if self.gil else "non-idle threads",
                                              seconds=seconds))
            self.raw.unlink()
