"""A guest's heartbeat age, read just before acting: a fresh heartbeat vetoes a reset.

An alert is only a claim: whoever holds Alertmanager's token can send `VMHung` for a guest that is
working. The rules' own input, the heartbeat, settles it: a guest whose agent reported within the
stale timeout is not hung, whatever the alert says. The age comes from Prometheus
(`webhook.prometheus_url`: the freshest `vmhealth_heartbeat_timestamp_seconds` over every exporter
replica, aged on Prometheus' clock) or else from the exporters' read API (`webhook.exporter_urls`:
the freshest `lastHeartbeat`, aged on each exporter's clock by its `Date` header). A source that
cannot answer is no evidence either way: the decision goes on, and the evidence says so.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from .prometheus_api import PrometheusAPI, PrometheusError

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 5.0
_LABEL = re.compile(r"^[A-Za-z0-9._-]+$")  # cluster names are checked at start; anything else is refused


@dataclass(frozen=True)
class HeartbeatAge:
    """Seconds since the guest's last heartbeat (None: none known), where it was read, and any failure."""

    age: float | None
    source: str
    error: str = ""


class HeartbeatReader:
    """Reads heartbeat ages from Prometheus, or else from the exporters; `None` source: nothing to read."""

    def __init__(self, prometheus_url: str | None, exporter_urls: list[str], timeout: float = TIMEOUT_SECONDS,
                 ca_bundle: str | None = None, client_cert: tuple[str, str] | None = None,
                 exporter_token: str | None = None):
        self.prometheus_url = prometheus_url.rstrip("/") if prometheus_url else None
        self.exporter_urls = [url.rstrip("/") for url in exporter_urls]
        self.timeout = timeout
        self.session = requests.Session()
        self.prometheus = PrometheusAPI(self.prometheus_url or "", timeout)
        # for the exporters, per request (requests lets REQUESTS_CA_BUNDLE override a session's verify)
        self.tls: dict[str, Any] = {"verify": ca_bundle or True, "cert": client_cert}
        self.exporter_headers = {"Authorization": f"Bearer {exporter_token}"} if exporter_token else {}

    @property
    def configured(self) -> bool:
        return bool(self.prometheus_url or self.exporter_urls)

    def describe(self) -> str:
        if self.prometheus_url:
            return f"Prometheus at {self.prometheus_url}"
        if self.exporter_urls:
            return f"the exporter(s) at {', '.join(self.exporter_urls)}"
        return "nothing"

    def age(self, cluster: str, vmid: int) -> HeartbeatAge:
        if not _LABEL.match(cluster):
            return HeartbeatAge(None, "none", f"cluster name {cluster!r} cannot be queried")
        if self.prometheus_url:
            return self._from_prometheus(cluster, vmid)
        if self.exporter_urls:
            return self._from_exporters(cluster, vmid)
        return HeartbeatAge(None, "none")

    def _from_prometheus(self, cluster: str, vmid: int) -> HeartbeatAge:
        query = f'time() - max(vmhealth_heartbeat_timestamp_seconds{{cluster="{cluster}",vmid="{vmid}"}})'
        try:
            result = self.prometheus.instant(query)
        except PrometheusError as exc:
            return HeartbeatAge(None, "prometheus", str(exc))
        if not result:
            return HeartbeatAge(None, "prometheus")
        try:
            return HeartbeatAge(max(float(result[0]["value"][1]), 0.0), "prometheus")
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            return HeartbeatAge(None, "prometheus", f"unexpected answer: {exc}"[:300])

    def _from_exporters(self, cluster: str, vmid: int) -> HeartbeatAge:
        """The freshest heartbeat any exporter holds; errors count only when no exporter answered."""
        ages: list[float] = []
        errors: list[str] = []
        answered = False
        for url in self.exporter_urls:
            try:
                reply = self.session.get(f"{url}/api/vms/{vmid}", params={"cluster": cluster}, timeout=self.timeout,
                                         headers=self.exporter_headers, **self.tls)
                if reply.status_code == 404:
                    answered = True
                    continue
                reply.raise_for_status()
                age = _exporter_age(reply.json(), reply.headers.get("Date"))
            except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
                errors.append(f"{url}: {type(exc).__name__}: {exc}"[:300])
                continue
            answered = True
            if age is not None:
                ages.append(age)
        if ages:
            return HeartbeatAge(min(ages), "exporter")
        return HeartbeatAge(None, "exporter", "" if answered else "; ".join(errors))


def _exporter_age(row: dict[str, Any], date_header: str | None) -> float | None:
    last = row.get("lastHeartbeat")
    if not last:
        return None
    if not date_header:
        raise ValueError("the exporter's answer has no Date header")
    received = datetime.fromisoformat(str(last).replace("Z", "+00:00"))
    now = parsedate_to_datetime(date_header)
    # Date has whole seconds: the age may read up to a second short, never long
    return max((now - received).total_seconds(), 0.0)
