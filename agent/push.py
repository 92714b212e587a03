"""Sending reports to the exporter, and deciding when to try again.

A failure is either transient (no connection, timeout, 5xx, 429: retried with exponential backoff and
jitter, capped at the interval) or a refusal (400/401/403/404/413/415: the report or the key is wrong,
so it is retried only at the normal interval, in case the exporter's side gets fixed). Only changes of
state are logged — reachable, unreachable, refused for a reason — so a guest cut off for a day writes
two lines, not three thousand.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from vmhealth import __version__

from .wire import post

log = logging.getLogger("vmhealth.agent.push")

REPORT_PATH = "/api/health/report"
# TLS alerts with which a server refuses the client's certificate (or its absence).
_CLIENT_CERT_ALERTS = ("CERTIFICATE_REQUIRED", "UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_EXPIRED",
                       "CERTIFICATE_UNKNOWN")
_TRANSIENT = {408, 425, 429, 500, 502, 503, 504}
HINTS = {
    400: "the exporter rejected the report's fields",
    401: "the exporter refused the API key: check agent.api_key (or VMHEALTH_AGENT_API_KEY) against exporter.api_key",
    403: "the key is valid but not for this guest: a per-VM key must be derived for this cluster and vmid",
    404: "the exporter does not know this guest: set agent.vmid, or check that Proxmox has this guest's "
         "SMBIOS UUID (smbios1) and the exporter can read VM configs",
    413: "the report is larger than the exporter accepts (exporter.max_body_bytes)",
    415: "the exporter did not take the report as JSON",
}


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: `state` is ok, unreachable, or refused:<status>."""

    state: str
    status: int | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def transient(self) -> bool:
        return self.state == "unreachable"


def client_tls(url: str, verify: bool, ca_bundle: str | None, cert_file: str | None = None,
               key_file: str | None = None) -> Any:
    """The TLS context for an https exporter URL (verified by default, against `ca_bundle` when given,
    presenting `cert_file` for mutual TLS; re-read when those files change); None for http, which
    then never loads the ssl module."""
    if not url.lower().startswith("https:"):
        return None
    from vmhealth.tls import ReloadingContext, client_context

    paths = tuple(p for p in (ca_bundle, cert_file, key_file) if p)
    return ReloadingContext(lambda: client_context(ca_bundle, verify, cert_file, key_file), paths)


class Pusher:
    """Posts reports to one exporter and remembers the state, for logging and for /metrics."""

    def __init__(self, exporter_url: str, api_key: str, timeout: float,
                 verify_ssl: bool = True, ca_bundle: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None) -> None:
        self.exporter = exporter_url.rstrip("/")
        self.url = self.exporter + REPORT_PATH
        self.api_key = api_key
        self.timeout = timeout
        self.tls = client_tls(self.url, verify_ssl, ca_bundle, cert_file, key_file)
        self.state = "starting"
        self.failures_in_row = 0
        self.failures_total = 0
        self.last_success: float | None = None

    def send(self, report: dict[str, Any]) -> Outcome:
        """Post one report; log if the state changed; never raises."""
        outcome = self._post(json.dumps(report, separators=(",", ":")).encode())
        self._record(outcome)
        return outcome

    def _post(self, body: bytes) -> Outcome:
        headers = {"Content-Type": "application/json", "X-API-Key": self.api_key,
                   "User-Agent": f"vmhealth-agent/{__version__}"}
        try:
            status, reply = post(self.url, body, headers, self.timeout, self.tls and self.tls.context())
        except OSError as exc:
            verify_message = getattr(exc, "verify_message", None)  # ssl.SSLCertVerificationError
            if verify_message:
                return Outcome("refused:tls", None, f"TLS certificate not trusted: {verify_message} "
                               "(set agent.ca_bundle to the exporter's CA)")
            alert = str(getattr(exc, "reason", "") or "")
            if alert.endswith(_CLIENT_CERT_ALERTS):
                return Outcome("refused:tls", None, f"the exporter refused this agent's client certificate "
                               f"({alert.lower().replace('_', ' ')}): check agent.client_cert_file against "
                               "the exporter's tls_client_ca_file")
            return Outcome("unreachable", None, f"{exc.__class__.__name__}: {exc}" if str(exc) else
                           exc.__class__.__name__)
        if 200 <= status < 300:
            return Outcome("ok", status, "")
        detail = _error_text(reply)
        if status in _TRANSIENT or status >= 500:
            return Outcome("unreachable", status, f"HTTP {status} {detail}".strip())
        return Outcome(f"refused:{status}", status, detail)

    def _record(self, outcome: Outcome) -> None:
        previous, self.state = self.state, outcome.state
        if outcome.ok:
            self.last_success = time.time()
            if previous != "ok":
                if previous == "starting":
                    log.info("reporting to %s", self.url)
                else:
                    log.info("exporter %s accepts reports again (after %d failed attempt(s))",
                             self.url, self.failures_in_row)
            self.failures_in_row = 0
            return
        self.failures_in_row += 1
        self.failures_total += 1
        if previous == outcome.state:
            return
        if outcome.transient:
            log.warning("exporter %s unreachable: %s; retrying with backoff, logging again when it recovers",
                        self.url, outcome.detail)
        else:
            hint = HINTS.get(outcome.status or 0, "")
            log.error("exporter %s refused the report (%s): %s%s", self.url,
                      outcome.status or outcome.state.split(":", 1)[1],
                      outcome.detail, f" — {hint}" if hint else "")


def _error_text(raw: bytes) -> str:
    """The exporter's own reason from a JSON error body (`error` and `fields`), else its first bytes."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:200]
    if not isinstance(body, dict):
        return str(body)[:200]
    text = str(body.get("error") or body.get("message") or "")
    fields = body.get("fields")
    if isinstance(fields, dict) and fields:
        text += " (" + "; ".join(f"{k}: {v}" for k, v in fields.items()) + ")"
    return text


def next_delay(interval: float, outcome: Outcome | None, failures_in_row: int,
               rng: random.Random | None = None, base: float = 1.0) -> float:
    """Seconds until the next report: the interval after success or refusal; backoff with jitter after a
    transient failure (base·2^(n-1), full jitter in its upper half, never above the interval)."""
    if outcome is None or not outcome.transient:
        return interval
    rng = rng or random
    ceiling = min(interval, base * 2 ** max(0, failures_in_row - 1))
    return rng.uniform(ceiling / 2, ceiling)
