"""Alertmanager webhook payloads (version 4) turned into alert events, with every problem named.

Each alert's own `status` decides (the top-level one only says whether any alert fires); keys this
module does not know are ignored, because newer Alertmanagers add fields (`notification_reason`,
`routeLabels`); the receiver name arrives regexp-escaped (`pve\\.remediator`) and is only logged.
The rules' evidence annotations (`EVIDENCE_KEYS`) are kept as numbers when they are plain decimals;
one that is missing or malformed is simply not given, never a reason to refuse the notification.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vmhealth.textformat import utf8_text

# Labels that ask for a remediation; the DESIGN's `action`, and `remediate` as older routes name it.
ACTION_LABELS = ("action", "remediate")
ACTIONS = ("reset",)
# Annotations of VMHung that carry what the rules judged on, kept with the event as numbers.
EVIDENCE_KEYS = ("heartbeat_age_seconds", "io_rate_bytes_per_second", "io_idle_seconds", "io_bytes_total",
                 "io_judged_at")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")  # ASCII digits only
_DECIMAL_CHARS = 64


class PayloadError(ValueError):
    """A notification that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Alert:
    """One alert of a notification, reduced to what the webhook decides on."""

    fingerprint: str
    starts_at: str  # UTC, RFC 3339 with the sender's precision
    status: str  # firing | resolved
    alertname: str
    labels: dict[str, str]
    cluster: str | None
    vmid: int | None
    node: str
    name: str
    action: str  # "" when the alert asks for none
    evidence: dict[str, float] = field(default_factory=dict)  # of EVIDENCE_KEYS, those given well-formed


@dataclass
class Notification:
    """The parts of one webhook message the receiver uses."""

    receiver: str
    status: str
    group_key: str
    truncated: int
    alerts: list[Alert] = field(default_factory=list)


_FRACTION = re.compile(r"^(?P<head>[^.]+?)(?:\.(?P<frac>\d+))?(?P<zone>Z|[+-]\d{2}:\d{2})$")


def normalise_time(value: Any, where: str) -> str:
    """An RFC 3339 time as UTC text, keeping up to nanoseconds so (fingerprint, startsAt) stays exact."""
    if not isinstance(value, str) or not value:
        raise PayloadError(f"{where}: expected an RFC 3339 time, got {value!r}")
    match = _FRACTION.match(value.strip())
    if not match:
        raise PayloadError(f"{where}: {value!r} is not an RFC 3339 time")
    zone = match["zone"]
    try:
        base = datetime.fromisoformat(match["head"] + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        raise PayloadError(f"{where}: {value!r} is not an RFC 3339 time") from None
    fraction = (match["frac"] or "").rstrip("0")
    text = base.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


def parse_time(text: str) -> float:
    """Unix seconds of a normalised time (sub-microsecond digits dropped)."""
    head, _, rest = text.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(head + "+00:00").timestamp()
    return seconds + (float("0." + rest) if rest else 0.0)


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{where}: expected an object of strings, got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise PayloadError(f"{where}.{key}: expected a string, got {type(item).__name__}")
        if not utf8_text(key + item):
            raise PayloadError(f"{where}: {key!r} holds a lone surrogate, which is not Unicode text")
    return dict(value)


def evidence_of(annotations: dict[str, str]) -> dict[str, float]:
    """The known evidence annotations that are plain, finite, non-negative decimals; the rest is not given."""
    out: dict[str, float] = {}
    for key in EVIDENCE_KEYS:
        text = annotations.get(key)
        if not isinstance(text, str) or len(text) > _DECIMAL_CHARS or not _DECIMAL.fullmatch(text.strip()):
            continue
        value = float(text) + 0.0  # "-0" is 0
        if math.isfinite(value) and value >= 0:
            out[key] = value
    return out


def _vmid(labels: dict[str, str], where: str) -> int | None:
    raw = labels.get("vmid")
    if raw is None:
        kind_id = labels.get("id", "")  # prometheus-pve-exporter style: "qemu/100"
        raw = kind_id.partition("/")[2] if "/" in kind_id else None
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or not 1 <= int(raw) <= 999_999_999:
        raise PayloadError(f"{where}.labels.vmid: {raw!r} is not a guest id")
    return int(raw)


def parse_alert(alert: Any, where: str, default_cluster: str | None) -> Alert:
    """One entry of `alerts[]`."""
    if not isinstance(alert, dict):
        raise PayloadError(f"{where}: expected an object, got {type(alert).__name__}")
    status = alert.get("status")
    if status not in ("firing", "resolved"):
        raise PayloadError(f"{where}.status: expected 'firing' or 'resolved', got {status!r}")
    fingerprint = alert.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint or len(fingerprint) > 128 or not utf8_text(fingerprint):
        raise PayloadError(f"{where}.fingerprint: expected a non-empty string of at most 128 characters")
    labels = _string_map(alert.get("labels"), f"{where}.labels")
    annotations = _string_map(alert.get("annotations"), f"{where}.annotations")
    starts_at = normalise_time(alert.get("startsAt"), f"{where}.startsAt")
    action = next((labels[k] for k in ACTION_LABELS if labels.get(k)), "")
    return Alert(
        fingerprint=fingerprint,
        starts_at=starts_at,
        status=status,
        alertname=labels.get("alertname", ""),
        labels=labels,
        cluster=labels.get("cluster") or default_cluster,
        vmid=_vmid(labels, where),
        node=labels.get("node", ""),
        name=labels.get("name", "") or labels.get("hostname", ""),
        action=action,
        evidence=evidence_of(annotations),
    )


def parse_notification(body: Any, default_cluster: str | None = None) -> Notification:
    """A whole message; `default_cluster` labels alerts without `cluster` when only one is configured."""
    if not isinstance(body, dict):
        raise PayloadError(f"body: expected a JSON object, got {type(body).__name__}")
    version = body.get("version")
    if version != "4":
        raise PayloadError(f"version: expected \"4\", got {version!r}")
    alerts = body.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError(f"alerts: expected a list, got {type(alerts).__name__}")
    truncated = body.get("truncatedAlerts", 0)
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise PayloadError(f"truncatedAlerts: expected a whole number, got {truncated!r}")
    status = body.get("status", "")
    if status not in ("firing", "resolved"):
        raise PayloadError(f"status: expected 'firing' or 'resolved', got {status!r}")
    events = [parse_alert(alert, f"alerts[{i}]", default_cluster) for i, alert in enumerate(alerts)]
    return Notification(
        receiver=str(body.get("receiver", "")),
        status=status,
        group_key=str(body.get("groupKey", "")),
        truncated=truncated,
        alerts=events,
    )
