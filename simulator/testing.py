"""Start a simulator for a test, a demo or a benchmark, and always stop it.

    with running_simulator(nodes=3, guests=30, agents_to="http://127.0.0.1:9747", agent_key=KEY) as sim:
        config = {"clusters": [sim.cluster_config()]}
        sim.hang(105)
        ...
        assert sim.resets(105)

In-process (threads, the default) or as a `vmhealth sim` subprocess (`subprocess=True`, for
benchmarks that must not share the GIL with the code under test). Either way the object has the
same control methods as `SimControl`.
"""

from __future__ import annotations

import json
import os
import subprocess as sp
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from .ctl import SimControl


class RunningSimulator(SimControl):
    """A started simulator: where it listens, how to authenticate, and its control API."""

    def __init__(self, host: str, ca_bundle: str, token_id: str, token_secret: str, cluster_name: str,
                 extra_tokens: dict[str, tuple[str, str]]):
        super().__init__(f"https://{host}", ca_bundle)
        self.host = host
        self.ca_bundle = ca_bundle
        self.token_id = token_id
        self.token_secret = token_secret
        self.cluster_name = cluster_name
        self.tokens = extra_tokens  # role -> (token id, secret)
        self.simulator: Any = None  # the in-process Simulator, when there is one

    @property
    def base_url(self) -> str:
        return f"https://{self.host}/api2/json"

    def cluster_config(self, role: str = "full", verify_ssl: bool = True) -> dict[str, Any]:
        """A `clusters[]` entry of the vmhealth YAML for this simulator (role: full, audit, power, power-noagent)."""
        token_id, secret = (self.token_id, self.token_secret) if role == "full" else self.tokens[role]
        entry: dict[str, Any] = {"name": self.cluster_name, "host": self.host, "token_id": token_id,
                                 "token_secret": secret, "verify_ssl": verify_ssl}
        if verify_ssl:
            entry["ca_bundle"] = self.ca_bundle
        return entry

    def auth_header(self, role: str = "full") -> dict[str, str]:
        token_id, secret = (self.token_id, self.token_secret) if role == "full" else self.tokens[role]
        return {"Authorization": f"PVEAPIToken={token_id}={secret}"}


@contextmanager
def running_simulator(
    nodes: int = 3, guests: int = 30, lxc: int = 0, templates: int = 0, agents_to: str | None = None,
    agent_interval: float = 30.0, agent_key: str = "", agent_key_mode: str = "per-vm", cluster_name: str = "sim",
    token_id: str = "root@pam!sim", token_secret: str = "sim-secret", boot_seconds: float = 1.0,
    task_seconds: float = 0.2, port: int = 0, subprocess: bool = False, start_timeout: float = 30.0,
    agent_ping_delay: float = 0.0, agent_tls: tuple[str, str, str] | None = None,
) -> Iterator[RunningSimulator]:
    """A running simulator on 127.0.0.1 (a free port unless `port`), stopped when the block ends.

    Besides the full token it has an audit-only token `audit@pve!sim`, the webhook's token
    `remediator@pve!sim` (role "power": VM.PowerMgmt and VM.GuestAgent.Audit), the same without
    VM.GuestAgent.Audit `noagent@pve!sim` (role "power-noagent"; see `cluster_config(role=...)`) and a
    user `root@pam` with password `token_secret` for ticket logins. `agent_tls` (CA, client cert, key;
    in-process only) is what the agents verify an https exporter with and present to it.
    """
    extra = {"audit": ("audit@pve!sim", token_secret + "-audit"),
             "power": ("remediator@pve!sim", token_secret + "-power"),
             "power-noagent": ("noagent@pve!sim", token_secret + "-power-noagent")}
    with tempfile.TemporaryDirectory(prefix="vmhealth-sim-") as folder:
        if subprocess:
            if agent_tls:
                raise ValueError("agent_tls needs the simulator in-process")
            with _subprocess(folder, locals()) as handle:
                yield handle
            return
        from .launch import SimOptions, build

        options = SimOptions(
            nodes=nodes, guests=guests, lxc=lxc, templates=templates, port=port, cluster_name=cluster_name,
            token_id=token_id, token_secret=token_secret,
            tokens=[(*extra[role], role) for role in ("audit", "power", "power-noagent")],
            users=[("root@pam", token_secret, "full")], cert_dir=folder, boot_seconds=boot_seconds,
            task_seconds=task_seconds, agents_to=agents_to, agent_interval=agent_interval, agent_key=agent_key,
            agent_key_mode=agent_key_mode, agent_ping_delay=agent_ping_delay, agent_tls=agent_tls,
        )
        sim, files = build(options)
        sim.start()
        try:
            host, bound = sim.address
            handle = RunningSimulator(f"{host}:{bound}", str(files.ca), token_id, token_secret, cluster_name, extra)
            handle.simulator = sim
            yield handle
        finally:
            sim.stop()


@contextmanager
def _subprocess(folder: str, a: dict[str, Any]) -> Iterator[RunningSimulator]:
    ready = Path(folder) / "ready.json"
    command = [
        sys.executable, "-m", "vmhealth", "sim", "--listen", f"127.0.0.1:{a['port']}", "--nodes", str(a["nodes"]),
        "--guests", str(a["guests"]), "--lxc", str(a["lxc"]), "--templates", str(a["templates"]),
        "--cluster-name", a["cluster_name"], "--token-id", a["token_id"], "--token-secret", a["token_secret"],
        "--audit-token", "=".join(a["extra"]["audit"]), "--power-token", "=".join(a["extra"]["power"]),
        "--power-noagent-token", "=".join(a["extra"]["power-noagent"]),
        "--agent-ping-delay", f"{a['agent_ping_delay']}s",
        "--user", f"root@pam={a['token_secret']}", "--cert-dir", folder, "--ready-file", str(ready),
        "--boot-time", f"{a['boot_seconds']}s", "--task-time", f"{a['task_seconds']}s", "--log-level", "warning",
    ]
    if a["agents_to"]:
        command += ["--agents-to", a["agents_to"], "--agent-interval", f"{a['agent_interval']}s",
                    "--agent-key", a["agent_key"], "--agent-key-mode", a["agent_key_mode"]]
    log_path = Path(folder) / "sim.log"
    with open(log_path, "wb") as log_file:
        process = sp.Popen(command, stdout=log_file, stderr=sp.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            deadline = time.monotonic() + a["start_timeout"]
            while not ready.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"vmhealth sim did not start: {log_path.read_text(errors='replace')[-2000:]}")
                time.sleep(0.05)
            info = json.loads(ready.read_text())
            yield RunningSimulator(info["host"], info["ca_bundle"], a["token_id"], a["token_secret"],
                                   a["cluster_name"], a["extra"])
        finally:  # SIGTERM, SIGKILL after 10 s (kill is a no-op once it has exited)
            process.terminate()
            with suppress(sp.TimeoutExpired):
                process.wait(timeout=10)
            process.kill()
            process.wait(timeout=10)
