"""The agent's life: build the parts from the configuration once, then push and/or serve until stopped.

The same `Agent.run(stop)` serves the command line (stopped by SIGTERM/SIGINT) and the Windows service
(stopped by the service manager), so the service wrapper stays a few lines.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import TYPE_CHECKING, Any

from .collect import Collector, Sample
from .exposition import render
from .fanout import Fanout
from .identity import smbios_uuid
from .payload import Identity, build
from .push import Pusher

if TYPE_CHECKING:
    from vmhealth.config import AgentConfig

log = logging.getLogger("vmhealth.agent")


def effective_timeout(timeout: float, interval: float) -> float:
    """The HTTP timeout, kept below the interval so that one slow exporter cannot stack up reports."""
    return min(timeout, interval * 0.8)


def pushers_from(agent_cfg: AgentConfig) -> list[Pusher]:
    """One Pusher per exporter of `agent.exporter_urls` (the config loader puts `exporter_url` there)."""
    timeout = effective_timeout(float(agent_cfg.timeout), float(agent_cfg.interval))
    return [Pusher(url, agent_cfg.api_key, timeout, agent_cfg.verify_ssl, agent_cfg.ca_bundle,
                   agent_cfg.client_cert_file, agent_cfg.client_key_file)
            for url in agent_cfg.exporter_urls]


def identity_from(agent_cfg: AgentConfig) -> Identity:
    """The guest's identity; the SMBIOS UUID is read once here, and its absence explained once."""
    uuid, why = smbios_uuid(agent_cfg.uuid)
    if uuid is None and agent_cfg.vmid is None:
        log.warning("no vmid configured and no SMBIOS UUID: %s. The exporter cannot tell which guest this is; "
                    "set agent.vmid or agent.uuid (docs/agent.md, Identity)", why)
    elif uuid is None:
        log.debug("no SMBIOS UUID (%s); identified by vmid %s", why, agent_cfg.vmid)
    return Identity(vmid=agent_cfg.vmid, uuid=uuid, cluster=agent_cfg.cluster)


class Agent:
    """One agent: a collector, an identity, and a pusher and/or a metrics server, per `mode`."""

    def __init__(self, agent_cfg: AgentConfig, collector: Collector | None = None,
                 identity: Identity | None = None, rng: random.Random | None = None) -> None:
        self.cfg = agent_cfg
        self.mode = agent_cfg.mode
        self.interval = float(agent_cfg.interval)
        self.collector = collector or Collector(agent_cfg.mounts)
        self.identity = identity or identity_from(agent_cfg)
        self.rng = rng or random.Random()
        self.lock = threading.Lock()
        self.pushers: list[Pusher] = pushers_from(agent_cfg) if self.mode in ("push", "both") else []
        self.server: Any = None

    def sample(self) -> Sample:
        with self.lock:
            return self.collector.collect()

    def report(self) -> dict[str, Any]:
        return build(self.sample(), self.identity)

    def metrics_page(self) -> str:
        return render(self.sample(), self.identity, self.pushers if self.mode == "both" else ())

    def start_server(self) -> None:
        from vmhealth.config import split_listen

        from .server import MetricsServer

        host, port = split_listen(self.cfg.listen)
        tls = None
        if self.cfg.tls_cert_file:
            from vmhealth.tls import reloading_server_context, server_files

            tls = reloading_server_context(server_files(self.cfg))  # type: ignore[arg-type]
        self.server = MetricsServer(host, port, self.metrics_page, tls)
        self.server.start()
        log.info("serving /metrics on %s://%s", "https" if tls else "http", self.cfg.listen)

    def run(self, stop: threading.Event) -> int:
        """Until `stop` is set. Returns the exit status (0: stopped as asked)."""
        if self.mode in ("pull", "both"):
            self.start_server()
        try:
            if self.pushers:
                self._push_loop(stop)
            else:
                stop.wait()
        finally:
            if self.server is not None:
                self.server.shutdown()
                self.server.server_close()
        return 0

    def _push_loop(self, stop: threading.Event) -> None:
        """Collect one report per interval and hand it to every exporter's sender."""
        fanout = Fanout(self.pushers, self.interval, self.rng)
        # Start-up jitter: thousands of guests booted together must not report in the same second.
        delay = self.rng.uniform(0, min(self.interval, 30.0))
        log.info("pushing to %s every %gs (first report in %.1fs)", ", ".join(p.url for p in self.pushers),
                 self.interval, delay)
        fanout.start()
        try:
            while not stop.wait(delay):
                fanout.offer(self.report())
                delay = self.interval
        finally:
            fanout.close()
