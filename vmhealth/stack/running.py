"""The whole product on loopback: simulator, exporter, webhook, Prometheus and Alertmanager.

One stack for the demo, the end-to-end tests, the benchmarks and the fault tests, so that all of
them run the same configuration. The exporter and the webhook run as `vmhealth` subprocesses,
Prometheus and Alertmanager are the real binaries, each a `launcher.Child`; their configurations are generated from the
repository's `prometheus/` and `alertmanager/` files with shorter timings:

    with running_stack(StackSettings(guests=20), workdir) as stack:
        stack.sim.hang(105)
        ...
        assert len(stack.sim.resets(105)) == 1

Every `for:` of the rules is multiplied by `rule_time_scale`, so the rules keep their order
(VMHealthMassHeartbeatLoss still fires before VMHung could) at a fraction of the production delays.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from vmhealth.bundled import bundled_file
from vmhealth.durations import format_duration, parse_duration
from vmhealth.stack.binaries import require_binary
from vmhealth.stack.launcher import Child, clean_env, vmhealth_command
from vmhealth.stack.processes import free_port

AGENT_KEY = "demo-agent-shared-key"
WEBHOOK_TOKEN = "demo-webhook-token"
ADMIN_TOKEN = "demo-admin-token"
VIEWER_TOKEN = "demo-viewer-token"  # the history, as `vmhealth history` and the console read it
READ_TOKEN = "demo-exporter-read-token"  # Prometheus' credential for the exporter's /metrics and read API
METRICS_TOKEN = "demo-webhook-metrics-token"  # Prometheus' credential for the webhook's /metrics


@dataclass(frozen=True)
class StackTLS:
    """A private CA's files for a stack over TLS: the exporter and the webhook serve `server_*` and
    require client certificates signed by `ca`; Prometheus, Alertmanager, the simulated agents and the
    stack's own requests verify with `ca` and present `client_*`."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_keys(self) -> dict[str, str]:
        """The tls_* keys of the exporter's and the webhook's sections."""
        return {"tls_cert_file": str(self.server_cert), "tls_key_file": str(self.server_key),
                "tls_client_ca_file": str(self.ca)}

    def client_config(self) -> dict[str, str]:
        """Prometheus' and Alertmanager's `tls_config`."""
        return {"ca_file": str(self.ca), "cert_file": str(self.client_cert), "key_file": str(self.client_key)}

    def requests_options(self) -> dict[str, Any]:
        return {"verify": str(self.ca), "cert": (str(self.client_cert), str(self.client_key))}


@dataclass
class StackSettings:
    """Sizes and timings of a stack; the defaults make a hang visible within a minute."""

    nodes: int = 3
    guests: int = 20
    agent_interval: float = 2.0
    stale_timeout: str = "10s"
    io_window: str = "5s"  # thresholds.io_window: production's 60s / 12, like the rest
    poll_interval: str = "2s"
    scrape_interval: str = "2s"
    evaluation_interval: str = "2s"
    rule_time_scale: float = 1 / 12
    group_wait: str = "1s"
    group_interval: str = "2s"
    repeat_interval: str = "1m"
    policy: dict[str, Any] = field(default_factory=dict)
    database_url: str | None = None
    webhook_replicas: int = 1
    exporter_replicas: int = 1  # independent exporters (own database each); agents send to all
    alertmanager_peers: int = 1
    sim_task_seconds: float = 0.5
    sim_boot_seconds: float = 2.0
    sim_agent_ping_delay: float = 0.0  # agent/ping's wait for a guest agent that does not answer (Proxmox: ~3s)
    sim_subprocess: bool = False
    cluster_name: str = "sim"
    start_timeout: float = 90.0
    exporter: dict[str, Any] = field(default_factory=dict)  # extra `exporter:` keys
    thresholds: dict[str, Any] = field(default_factory=dict)  # extra `thresholds:` keys
    cluster: dict[str, Any] = field(default_factory=dict)  # extra `clusters[0]` keys (`timeout`, ...)
    webhook: dict[str, Any] = field(default_factory=dict)  # extra `webhook:` keys (`claim_lease`, ...)
    prometheus_args: list[str] = field(default_factory=list)  # extra flags (`--rules.alert.resend-delay=5s`)
    tls: StackTLS | None = None  # the exporter and the webhook over mutual TLS
    scrape_jobs: list[dict[str, Any]] = field(default_factory=list)  # extra Prometheus jobs
    # exporter.read_token and webhook.metrics_token set, and sent by Prometheus (`Stack.read_headers`)
    read_tokens: bool = False


DEMO_POLICY: dict[str, Any] = {
    "boot_grace": "0s", "cooldown": "15s", "max_cooldown": "1m", "task_timeout": "20s",
    "retry_interval": "5s", "max_actions_per_hour": 30,
}


class Stack:
    """A running stack: its URLs, its processes by name, and shortcuts to what the tests look at."""

    def __init__(self, settings: StackSettings, workdir: Path, sim: Any):
        self.settings = settings
        self.workdir = workdir
        self.sim = sim
        self.cluster: str = sim.cluster_name
        self.processes: dict[str, Child] = {}
        self.urls: dict[str, str] = {}
        self.webhook_urls: list[str] = []
        self.exporter_urls: list[str] = []
        self.alertmanager_urls: list[str] = []
        self.config_path = workdir / "vmhealth.yml"
        # requests' options for the exporter and the webhook (a client certificate over TLS)
        self.client_options: dict[str, Any] = settings.tls.requests_options() if settings.tls else {}

    # processes -------------------------------------------------------------------------------
    def start(self, name: str) -> None:
        self.processes[name].start(self.settings.start_timeout)

    def stop(self, name: str) -> None:
        self.processes[name].stop()

    def kill(self, name: str) -> None:
        """SIGKILL of the process and its children: no shutdown handler runs, as after a crash."""
        self.processes[name].stop(kill=True)

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def log(self, name: str) -> str:
        return self.processes[name].output()

    def close(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()

    # what the stack knows ---------------------------------------------------------------------
    def agent_key(self, vmid: int) -> str:
        """The guest's own agent key, as the simulator's agents send it (the exporter takes no other)."""
        from vmhealth.keys import derive_vm_key

        return derive_vm_key(AGENT_KEY, self.cluster, vmid)

    @property
    def viewer_token(self) -> str:
        """The webhook's viewer token: the stack's own, or the one the settings give it."""
        return str(self.settings.webhook.get("viewer_token", VIEWER_TOKEN))

    def read_headers(self, component: str) -> dict[str, str]:
        """The headers that read the exporter's or the webhook's /metrics (and the exporter's API)."""
        if not self.settings.read_tokens:
            return {}
        return {"Authorization": f"Bearer {READ_TOKEN if component == 'exporter' else METRICS_TOKEN}"}

    def query(self, expr: str) -> list[dict[str, Any]]:
        """A Prometheus instant query's result vector."""
        reply = requests.get(f"{self.urls['prometheus']}/api/v1/query", params={"query": expr}, timeout=10)
        reply.raise_for_status()
        return reply.json()["data"]["result"]

    def alerts(self) -> list[dict[str, Any]]:
        """Prometheus' pending and firing alerts."""
        reply = requests.get(f"{self.urls['prometheus']}/api/v1/alerts", timeout=10)
        reply.raise_for_status()
        return reply.json()["data"]["alerts"]

    def resets(self, vmid: int | None = None) -> list[dict[str, Any]]:
        """The webhook's history rows, newest first."""
        params = {"vmid": vmid} if vmid is not None else {}
        reply = requests.get(f"{self.urls['webhook']}/api/resets", params=params, timeout=10,
                             headers={"Authorization": f"Bearer {self.viewer_token}"}, **self.client_options)
        reply.raise_for_status()
        return reply.json()["resets"]


@contextmanager
def running_stack(settings: StackSettings | None = None, workdir: Path | str | None = None) -> Iterator[Stack]:
    """Start everything (ready, or RuntimeError with the failing log); stop everything on exit."""
    import tempfile

    from vmhealth.simulator.testing import running_simulator

    settings = settings or StackSettings()
    with ExitStack() as cleanup:
        if workdir is None:
            workdir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="vmhealth-stack-"))
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        exporter_ports = [free_port() for _ in range(settings.exporter_replicas)]
        tls = settings.tls
        sim = cleanup.enter_context(running_simulator(
            nodes=settings.nodes, guests=settings.guests,
            agents_to=",".join(f"{_scheme(settings)}://127.0.0.1:{port}" for port in exporter_ports),
            agent_tls=(str(tls.ca), str(tls.client_cert), str(tls.client_key)) if tls else None,
            agent_interval=settings.agent_interval, agent_key=AGENT_KEY, cluster_name=settings.cluster_name,
            boot_seconds=settings.sim_boot_seconds, task_seconds=settings.sim_task_seconds,
            subprocess=settings.sim_subprocess, agent_ping_delay=settings.sim_agent_ping_delay,
        ))
        stack = Stack(settings, workdir, sim)
        cleanup.callback(stack.close)
        _build(stack, exporter_ports)
        for name in stack.processes:
            stack.start(name)
        yield stack


def _build(stack: Stack, exporter_ports: list[int]) -> None:
    """Write every configuration file into the workdir and define (not start) the processes."""
    s, workdir = stack.settings, stack.workdir
    webhook_ports = [free_port() for _ in range(s.webhook_replicas)]
    am_ports = [free_port() for _ in range(s.alertmanager_peers)]
    am_cluster_ports = [free_port() for _ in range(s.alertmanager_peers)]
    prometheus_port = free_port()
    scheme = _scheme(s)
    stack.webhook_urls = [f"{scheme}://127.0.0.1:{port}" for port in webhook_ports]
    stack.alertmanager_urls = [f"http://127.0.0.1:{port}" for port in am_ports]
    stack.exporter_urls = [f"{scheme}://127.0.0.1:{port}" for port in exporter_ports]
    stack.urls = {"exporter": stack.exporter_urls[0], "webhook": stack.webhook_urls[0],
                  "prometheus": f"http://127.0.0.1:{prometheus_port}", "alertmanager": stack.alertmanager_urls[0]}

    token_file = workdir / "webhook-token"
    token_file.write_text(WEBHOOK_TOKEN)
    for name, secret in (("exporter-read-token", READ_TOKEN), ("webhook-metrics-token", METRICS_TOKEN)):
        (workdir / name).write_text(secret)
    config = {
        "clusters": [{**stack.sim.cluster_config(), **s.cluster}],
        "thresholds": {"stale_timeout": s.stale_timeout, "io_window": s.io_window, **s.thresholds},
        "exporter": {"listen": f"127.0.0.1:{exporter_ports[0]}", "poll_interval": s.poll_interval,
                     "api_key": AGENT_KEY, "database_url": f"sqlite:///{workdir / 'exporter.db'}",
                     "flush_interval": "1s", **(s.tls.server_keys() if s.tls else {}), **s.exporter},
        "webhook": {"listen": f"127.0.0.1:{webhook_ports[0]}", "token": WEBHOOK_TOKEN, "admin_token": ADMIN_TOKEN,
                    "viewer_token": VIEWER_TOKEN,
                    "database_url": s.database_url or f"sqlite:///{workdir / 'webhook.db'}",
                    "prometheus_url": f"http://127.0.0.1:{prometheus_port}",
                    "policy": {**DEMO_POLICY, **s.policy}, **(s.tls.server_keys() if s.tls else {}), **s.webhook},
    }
    if s.read_tokens:
        config["exporter"]["read_token"] = READ_TOKEN
        config["webhook"]["metrics_token"] = METRICS_TOKEN
    stack.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    # the caller's VMHEALTH_* switches (CI's, say) are not configuration for the programs under test
    env = clean_env()

    def add(name: str, command: list[str], ready_url: str, process_env: dict[str, str] | None = None,
            ready_options: dict[str, Any] | None = None) -> None:
        stack.processes[name] = Child(name, command, workdir / f"{name}.log", ready_url, process_env,
                                      ready_options or {}, own_session=True)

    for index, (port, url) in enumerate(zip(exporter_ports, stack.exporter_urls, strict=True)):
        # each replica keeps its own last-seen state, as on its own host
        database = f"sqlite:///{workdir / (_replica('exporter', index) + '.db')}"
        own_db = {"VMHEALTH_EXPORTER_DATABASE_URL": database} if index else {}
        listen = ["--listen", f"127.0.0.1:{port}"]
        add(_replica("exporter", index), vmhealth_command("exporter", stack.config_path, *listen),
            f"{url}/readyz", {**env, **own_db}, stack.client_options)
    for index, (port, url) in enumerate(zip(webhook_ports, stack.webhook_urls, strict=True)):
        add(_replica("webhook", index), vmhealth_command("webhook", stack.config_path, "--listen", f"127.0.0.1:{port}"),
            f"{url}/healthz", env, stack.client_options)

    alertmanager = require_binary("alertmanager")
    am_config = workdir / "alertmanager.yml"
    am_config.write_text(yaml.safe_dump(alertmanager_config(s, stack.webhook_urls, token_file), sort_keys=False))
    for index, (port, cluster_port) in enumerate(zip(am_ports, am_cluster_ports, strict=True)):
        command = [alertmanager, f"--config.file={am_config}", f"--storage.path={workdir / f'am-data-{index}'}",
                   f"--web.listen-address=127.0.0.1:{port}"]
        if s.alertmanager_peers > 1:
            command += [f"--cluster.listen-address=127.0.0.1:{cluster_port}",
                        f"--cluster.advertise-address=127.0.0.1:{cluster_port}", "--cluster.reconnect-timeout=1m"]
            command += [f"--cluster.peer=127.0.0.1:{peer}" for peer in am_cluster_ports if peer != cluster_port]
        else:
            command.append("--cluster.listen-address=")
        add(_replica("alertmanager", index), command, f"http://127.0.0.1:{port}/-/ready")

    prometheus = require_binary("prometheus")
    rules = [write_scaled_rules(bundled_file(f"prometheus/rules/{name}"), workdir / name, s.rule_time_scale)
             for name in ("vmhealth-recording.yml", "vmhealth-alerts.yml")]
    prom_config = workdir / "prometheus.yml"
    prom_config.write_text(yaml.safe_dump(prometheus_config(s, stack, rules), sort_keys=False))
    add("prometheus", [prometheus, f"--config.file={prom_config}", f"--storage.tsdb.path={workdir / 'prom-data'}",
                       f"--web.listen-address=127.0.0.1:{prometheus_port}", *s.prometheus_args],
        f"{stack.urls['prometheus']}/-/ready")


def _scheme(s: StackSettings) -> str:
    return "https" if s.tls else "http"


def _replica(name: str, index: int) -> str:
    return name if index == 0 else f"{name}-{index + 1}"


def write_scaled_rules(source: Path, target: Path, scale: float) -> Path:
    """Copy a rule file with every `for:` multiplied by `scale` (at least 1s where it was set)."""
    document = yaml.safe_load(source.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = format_duration(max(1.0, round(parse_duration(rule["for"]) * scale)))
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


def scrape_security(s: StackSettings, credentials_file: Path | None = None) -> dict[str, Any]:
    """What a job scraping the exporter or the webhook needs besides its targets: the scheme and
    `tls_config`, and with `read_tokens` the `authorization` read from `credentials_file`."""
    security: dict[str, Any] = {}
    if s.tls is not None:
        security.update(scheme="https", tls_config=s.tls.client_config())
    if s.read_tokens and credentials_file is not None:
        security["authorization"] = {"type": "Bearer", "credentials_file": str(credentials_file)}
    return security


def targets(urls: list[str]) -> list[dict[str, Any]]:
    """A `static_configs` list for URLs (the scheme is the job's)."""
    return [{"targets": [url.split("://", 1)[-1] for url in urls]}]


def prometheus_config(s: StackSettings, stack: Stack, rules: list[Path]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": s.scrape_interval, "evaluation_interval": s.evaluation_interval},
        "rule_files": [str(rule) for rule in rules],
        "alerting": {"alertmanagers": [{"static_configs": targets(stack.alertmanager_urls)}]},
        "scrape_configs": [
            {"job_name": "vmhealth-exporter", "static_configs": targets(stack.exporter_urls),
             **scrape_security(s, stack.workdir / "exporter-read-token")},
            {"job_name": "vmhealth-webhook", "static_configs": targets(stack.webhook_urls),
             **scrape_security(s, stack.workdir / "webhook-metrics-token")},
            *s.scrape_jobs,
        ],
    }


def alertmanager_config(s: StackSettings, webhook_urls: list[str], token_file: Path) -> dict[str, Any]:
    """The repository's routing and inhibitions, with the stack's timings and webhook replicas."""
    config = yaml.safe_load(bundled_file("alertmanager/alertmanager.yml").read_text())
    http_config: dict[str, Any] = {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}}
    if s.tls is not None:
        http_config["tls_config"] = s.tls.client_config()
    timings = {"group_wait": s.group_wait, "group_interval": s.group_interval, "repeat_interval": s.repeat_interval}
    config["route"].update(timings)
    for route in config["route"].get("routes", []):
        route.update(timings)
    for receiver in config["receivers"]:
        if receiver["name"] == "vmhealth-webhook":
            template = receiver["webhook_configs"][0]
            receiver["webhook_configs"] = [
                {**template, "url": f"{url}/alerts", "http_config": http_config}
                for url in webhook_urls
            ]
    return config
