"""The exporter's lifecycle: guest state restored from the database, the pollers and the /metrics page
run on a scheduler, changes written behind; and the report counters the views share."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from vmhealth import __version__
from vmhealth.config import Config, ExporterConfig, is_loopback

from .exposition import Page
from .persistence import GuestStateArchive, WriteBehind
from .poller import ClusterPoller
from .state import GuestState

log = logging.getLogger(__name__)


class Exporter:
    """The exporter's context: its config, guest state, pollers, write-behind and report counters."""

    def __init__(self, config: Config):
        self.config = config
        self.guests = GuestState(config.clusters, config.exporter.api_key, config.exporter.max_unknown_guests)
        self.archive = GuestStateArchive(config.exporter.database_url)
        restored = self.archive.load()
        self.guests.load(restored)
        if restored:
            log.info("restored last-seen state of %d guests", len(restored))
        if not config.exporter.per_vm_keys:
            log.warning("exporter.per_vm_keys is false: the shared agent key is accepted, and any guest holding it "
                        "can report for any other (keep a hung neighbour looking alive); give guests their own keys "
                        "(`vmhealth agent-key`) and remove the setting")
        if not config.exporter.read_token and not is_loopback(config.exporter.listen):
            log.warning("the exporter listens on %s beyond loopback and /metrics, /api/vms and /api/status need no "
                        "credential: every guest can read the fleet; set exporter.read_token and give it to "
                        "Prometheus", config.exporter.listen)
        idle = self.archive.load_idle()
        self.pollers = {c.name: ClusterPoller(c, self.guests, config.exporter, config.thresholds, self.archive,
                                              idle.get(c.name))
                        for c in config.clusters}
        self.write_behind = WriteBehind(self.guests, self.archive, config.exporter.flush_interval)
        self.reports: Counter[str] = Counter()
        # values left out of stored heartbeats, by reason: disks_over_limit, label_rate
        self.dropped: Counter[str] = Counter()
        self.page = Page(config.exporter, config.thresholds)
        self._reports_lock = threading.Lock()
        self.scheduler: BackgroundScheduler | None = None

    def count(self, result: str) -> None:
        with self._reports_lock:
            self.reports[result] += 1

    def count_dropped(self, numbers: dict[str, int]) -> None:
        """Values a stored heartbeat left out, by reason."""
        with self._reports_lock:
            self.dropped.update({reason: n for reason, n in numbers.items() if n})

    def counters(self) -> tuple[dict[str, int], dict[str, int]]:
        """Reports by result, and values left out of stored heartbeats by reason, as of now."""
        with self._reports_lock:
            return dict(self.reports), dict(self.dropped)

    def poll_all(self) -> None:
        for poller in self.pollers.values():
            poller.poll()

    def start(self) -> None:
        """Start polling (first poll at once) and writing behind."""
        scheduler = BackgroundScheduler(daemon=True)
        for name, poller in self.pollers.items():
            scheduler.add_job(
                poller.poll, "interval", seconds=self.config.exporter.poll_interval, id=f"poll-{name}",
                max_instances=1, coalesce=True, misfire_grace_time=None, **poll_timing(self.config.exporter),
            )
        # /metrics formats changed guests every second, not all at once when Prometheus asks.
        scheduler.add_job(self.page.absorb, "interval", args=[self.guests], seconds=1,
                          id="metrics-page", max_instances=1, coalesce=True)
        scheduler.start()
        self.scheduler = scheduler
        self.write_behind.start()
        log.info("exporter %s polling %d cluster(s) every %gs", __version__, len(self.pollers),
                 self.config.exporter.poll_interval)

    def stop(self) -> None:
        """Stop polling and write the last changes; safe to call more than once."""
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        self.write_behind.stop()
        self.archive.close()


def poll_timing(exporter_cfg: ExporterConfig) -> dict[str, datetime]:
    """When the polls run: from now on, or with `poll_offset` on the clock (unix time ≡ offset modulo the
    interval), so two replicas keep their stagger across restarts instead of drifting into step."""
    if exporter_cfg.poll_offset is None:
        return {"next_run_time": datetime.now(UTC)}
    return {"start_date": datetime.fromtimestamp(exporter_cfg.poll_offset, UTC)}
