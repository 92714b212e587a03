"""Build a ready-to-start simulator from options: cluster, tokens, certificate, agents."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .agents import Agents
from .auth import Auth
from .model import Cluster
from .server import Simulator
from .tls import CertFiles, generate, server_context


@dataclass
class SimOptions:
    nodes: int = 3
    guests: int = 30
    lxc: int = 0
    templates: int = 0
    host: str = "127.0.0.1"
    port: int = 8006
    cluster_name: str = "sim"
    token_id: str = "root@pam!sim"
    token_secret: str = "sim-secret"
    tokens: list[tuple[str, str, str]] = field(default_factory=list)  # (token id, secret, role)
    users: list[tuple[str, str, str]] = field(default_factory=list)  # (user@realm, password, role)
    cert_dir: str | None = None
    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    boot_seconds: float = 5.0
    task_seconds: float = 1.0
    auth_fail_delay: float = 0.0
    agent_ping_delay: float = 0.0  # agent/ping's wait before "QEMU guest agent is not running"
    agents_to: str | None = None
    agent_interval: float = 30.0
    agent_key: str = ""
    agent_key_mode: str = "per-vm"
    agent_jitter: float = 0.1
    agent_workers: int = 16
    agent_tls: tuple[str, str, str] | None = None  # (CA, client cert, key) for an https exporter


def build(options: SimOptions) -> tuple[Simulator, CertFiles]:
    """The simulator (not started yet) and the certificate files it serves."""
    cluster = Cluster(options.cluster_name, options.nodes, options.guests, options.lxc, options.templates,
                      boot_seconds=options.boot_seconds, task_seconds=options.task_seconds,
                      agent_ping_delay=options.agent_ping_delay)
    auth = Auth()
    auth.add_token(options.token_id, options.token_secret, "full")
    for token_id, secret, role in options.tokens:
        auth.add_token(token_id, secret, role)
    for user, password, role in options.users:
        auth.add_user(user, password, role)
    if options.cert or options.key:
        if not (options.cert and options.key):
            raise ValueError("--cert and --key go together")
        files = CertFiles(Path(options.ca or options.cert), Path(options.cert), Path(options.key))
    else:
        folder = options.cert_dir or tempfile.mkdtemp(prefix="vmhealth-sim-")
        hosts = tuple(dict.fromkeys((options.host, "127.0.0.1", "localhost")))
        files = generate(folder, hosts)
    sim = Simulator(cluster, auth, server_context(files.cert, files.key), options.host, options.port,
                    auth_fail_delay=options.auth_fail_delay)
    if options.agents_to:
        tls = options.agent_tls
        sim.agents = Agents(cluster, options.agents_to, options.agent_interval, options.agent_key,
                            options.agent_key_mode, options.agent_jitter, options.agent_workers,
                            verify=tls[0] if tls else True, client_cert=(tls[1], tls[2]) if tls else None)
    return sim, files
