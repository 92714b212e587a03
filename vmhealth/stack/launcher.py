"""One child process: started with its output in a log file, waited for until it answers, always stopped.

The stack, the benchmarks and the tests start `vmhealth exporter|webhook`, Prometheus, Alertmanager
and the programs the benchmarks compare through it, so that each gets the same log capture and the
same cleanup:

    with Child("exporter", vmhealth_command("exporter", config), log, f"{url}/readyz", clean_env()).started(60):
        ...
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vmhealth.stack.processes import wait_for


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the caller's VMHEALTH_* switches (a test run's or CI's are not configuration
    for the program under test), unbuffered, with `extra` added."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMHEALTH_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def vmhealth_command(subcommand: str, config: Path | str, *args: str) -> list[str]:
    """`python -m vmhealth <subcommand> --config <config> ...` with this interpreter."""
    return [sys.executable, "-m", "vmhealth", subcommand, "--config", str(config), *args]


@dataclass
class Child:
    """A program to run: how to start it (again), where it logs, and the URL that answers 200 once it is ready.

    `env` None inherits this environment. `own_session` puts it in a session of its own, so that a
    terminal's Ctrl-C reaches only the parent, which stops the children in order.
    """

    name: str
    command: list[str]
    log_path: Path
    ready_url: str | None = None
    env: dict[str, str] | None = None
    ready_options: dict[str, Any] = field(default_factory=dict)  # requests' verify/cert for an https probe
    stop_timeout: float = 15
    own_session: bool = False
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        """Start it, unless it runs, and wait for `ready_url` (RuntimeError with the log's end if it exits or
        is not ready within `timeout` seconds)."""
        if self.running:
            return
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                        cwd=self.cwd, start_new_session=self.own_session)
        if self.ready_url is not None:
            self.wait_until(self._answers, timeout, f"{self.name} to be ready")

    @contextmanager
    def started(self, timeout: float = 60) -> Iterator[Child]:
        """Started and ready for the block; stopped after it, also when it never got ready."""
        try:
            self.start(timeout)
            yield self
        finally:
            self.stop()

    def wait_until(self, condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
        """The first truthy `condition()`, checked while the child runs; RuntimeError with the log's end when
        it exits or `timeout` seconds pass."""
        def alive_and() -> Any:
            self.alive()
            return condition()

        try:
            return wait_for(alive_and, timeout, what, interval)
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}; its log {self.log_path} ends with:\n{self.tail()}") from None

    def _answers(self) -> bool:
        import requests

        assert self.ready_url is not None
        try:
            return requests.get(self.ready_url, timeout=2, **self.ready_options).status_code == 200
        except requests.RequestException:
            return False

    def alive(self) -> bool:
        """True while it runs; RuntimeError with the log's end once it has exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}; its log {self.log_path} "
                               f"ends with:\n{self.tail()}")
        return True

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (SIGKILL after `stop_timeout`), or with `kill` SIGKILL of it and its children at once: no
        shutdown handler runs, as after a crash. Workers left behind by a SIGKILLed master go too."""
        if self.process is not None:
            if kill and self.process.poll() is None:
                _kill_tree(self.process)
            workers = _children(self.process)
            _stop(self.process, self.stop_timeout)
            _kill_leftovers(workers)
        if self._log is not None:
            self._log.close()
            self._log = None

    def output(self) -> str:
        """Everything it logged."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, size: int = 3000) -> str:
        return self.output()[-size:]

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, and SIGKILL if it is still running after `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def _kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and its children at once: `vmhealth exporter|webhook` is a gunicorn master
    whose worker, left alive, would go on acting and keep the port from the restarted process."""
    import psutil

    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    process.send_signal(signal.SIGKILL)
    for child in children:
        with suppress(psutil.NoSuchProcess):
            child.kill()
    process.wait(timeout=10)
    psutil.wait_procs(children, timeout=10)


def _children(process: subprocess.Popen[bytes]) -> list[Any]:
    import psutil

    try:
        return psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
    except psutil.NoSuchProcess:
        return []


def _kill_leftovers(children: list[Any]) -> None:
    import psutil

    for child in children:
        with suppress(psutil.NoSuchProcess):
            if child.is_running():
                child.kill()
    psutil.wait_procs(children, timeout=10)
