"""The heartbeat payload: the original camelCase form (sizes in MB) and its extended fields.

`parse_report` turns a decoded JSON body into a `Report` or a dict of field -> problem, so the 400
reply can name every bad field at once. Nothing here touches state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from werkzeug.http import HTTP_STATUS_CODES

from vmhealth import safejson
from vmhealth.textformat import utf8_text

from .state import MAX_DISKS, Disk, Heartbeat

log = logging.getLogger(__name__)
MB = 1024 * 1024
MAX_BYTES = 2**60  # 1 EiB: anything larger is a unit mistake or an attack
MAX_MB = MAX_BYTES // MB
MAX_UPTIME = 100 * 365 * 86400
MAX_STRING = 255
# Disks kept per report: the first MAX_DISKS (state.py says why). Up to MAX_DISK_ENTRIES are checked
# as before; the valid ones after the first MAX_DISKS are dropped, not refused (the heartbeat matters
# more than the disks), and counted. A longer list is no agent's and gets 400.
MAX_DISK_ENTRIES = 64
MAX_VMID = 999_999_999


def vmid_text(value: str) -> int | None:
    """The guest id a string spells ("100", " 100 "), or None; only ASCII digits, since "²".isdigit()."""
    text = value.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else None


class BadJson(ValueError):
    """The body is not a JSON object."""


@dataclass(frozen=True)
class Report:
    """A validated report: who it says it is from, and the heartbeat to store."""

    vmid: int | None
    cluster: str | None
    uuid: str | None
    heartbeat: Heartbeat
    disks_dropped: int = 0  # entries after the first MAX_DISKS


def decode_json(body: bytes) -> dict[str, Any]:
    """The JSON object in `body`; NaN and Infinity literals are refused."""

    def refuse_constant(name: str) -> None:
        raise BadJson(f"{name} is not a number JSON allows")

    try:
        data = safejson.loads(body, parse_constant=refuse_constant)
    except BadJson:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJson(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadJson(f"body must be a JSON object, got {type(data).__name__}")
    return data


class _Fields:
    """Reads fields of one payload, collecting problems instead of stopping at the first."""

    def __init__(self, data: dict[str, Any]):
        self.data = data
        self.problems: dict[str, str] = {}
        self.disks_dropped = 0

    def string(self, name: str, required: bool = False, limit: int = MAX_STRING) -> str | None:
        value = self.data.get(name)
        if value is None:
            if required:
                self.problems[name] = "required"
            return None
        if not isinstance(value, str):
            self.problems[name] = f"must be a string, got {type(value).__name__}"
            return None
        if not value.isascii() and not utf8_text(value):
            self.problems[name] = "must be Unicode text (a lone surrogate cannot be a label value)"
            return None
        if required and not value.strip():
            self.problems[name] = "must not be empty"
            return None
        if len(value) > limit:
            self.problems[name] = f"longer than {limit} characters"
            return None
        return value

    def number(self, name: str, low: float = 0, high: float = math.inf, integer: bool = False) -> float | None:
        value = self.data.get(name)
        if value is None:
            return None
        return self._number(name, value, low, high, integer)

    def _number(self, name: str, value: Any, low: float, high: float, integer: bool) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problems[name] = f"must be a number, got {type(value).__name__}"
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.problems[name] = "must be a finite number"
            return None
        if value < low:
            self.problems[name] = "must not be negative" if low == 0 else f"must be at least {low:g}"
            return None
        if value > high:
            self.problems[name] = f"must be at most {high:g}"
            return None
        if integer and isinstance(value, float):
            if not value.is_integer():
                self.problems[name] = "must be a whole number"
                return None
            value = int(value)
        return value

    def vmid(self) -> int | None:
        value = self.data.get("vmid")
        if value is None or value == "":
            return None
        if isinstance(value, str):
            if vmid_text(value) is None:
                self.problems["vmid"] = f"must be a guest id like 100, got {value[:40]!r}"
                return None
            value = vmid_text(value)
        result = self._number("vmid", value, 1, MAX_VMID, integer=True)
        return int(result) if result is not None else None

    def disks(self) -> tuple[Disk, ...]:
        value = self.data.get("disks")
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problems["disks"] = f"must be a list, got {type(value).__name__}"
            return ()
        if len(value) > MAX_DISK_ENTRIES:
            self.problems["disks"] = f"more than {MAX_DISK_ENTRIES} entries"
            return ()
        out = []
        for i, item in enumerate(value):
            where = f"disks[{i}]"
            if not isinstance(item, dict):
                self.problems[where] = "must be an object with mountpoint, usedBytes, totalBytes"
                continue
            sub = _Fields(item)
            mountpoint = sub.string("mountpoint", required=True, limit=1024)
            used = sub.number("usedBytes", high=MAX_BYTES, integer=True)
            total = sub.number("totalBytes", high=MAX_BYTES, integer=True)
            if used is None and "usedBytes" not in sub.problems:
                sub.problems["usedBytes"] = "required"
            if total is None and "totalBytes" not in sub.problems:
                sub.problems["totalBytes"] = "required"
            for field_name, problem in sub.problems.items():
                self.problems[f"{where}.{field_name}"] = problem
            if mountpoint is not None and any(d.mountpoint == mountpoint for d in out):
                self.problems[f"{where}.mountpoint"] = f"{mountpoint!r} is listed twice"
                continue
            if not sub.problems and mountpoint is not None and used is not None and total is not None:
                out.append(Disk(mountpoint, int(used), int(total)))
        self.disks_dropped = max(0, len(out) - MAX_DISKS)
        return tuple(out[:MAX_DISKS])


def _bytes(fields: _Fields, bytes_name: str, mb_name: str) -> int | None:
    """A size from its byte field when present, else from the original's MB field."""
    in_bytes = fields.number(bytes_name, high=MAX_BYTES, integer=True)
    if in_bytes is not None:
        return int(in_bytes)
    in_mb = fields.number(mb_name, high=MAX_MB)
    return round(in_mb * MB) if in_mb is not None else None


def parse_report(data: dict[str, Any], received: float, identified: bool = False) -> Report | dict[str, str]:
    """A Report, or field -> problem for every field that is wrong.

    `identified`: the key already says which guest this is (a per-VM key), so vmid may be left out.
    """
    fields = _Fields(data)
    hostname = fields.string("hostname", required=True)
    vmid = fields.vmid()
    cluster = fields.string("cluster", limit=128)
    uuid = fields.string("uuid", limit=64)
    node = fields.string("node", limit=128) or ""
    status = fields.string("status", limit=32) or ""
    agent_version = fields.string("agentVersion", limit=64) or ""
    cpu = fields.number("cpuUsage", high=100)
    mem_used = _bytes(fields, "memUsedBytes", "ramUsage")
    mem_total = _bytes(fields, "memTotalBytes", "ramTotal")
    disk_used = _bytes(fields, "diskUsedBytes", "diskUsage")
    disk_total = _bytes(fields, "diskTotalBytes", "diskTotal")
    uptime = fields.number("uptime", high=MAX_UPTIME)
    guest_timestamp = fields.number("timestamp", high=1e11)
    net_rx = fields.number("netRxBytes", high=2**64, integer=True)
    net_tx = fields.number("netTxBytes", high=2**64, integer=True)
    load1 = fields.number("load1", high=1e6)
    disks = fields.disks()
    if vmid is None and not uuid and not identified and "vmid" not in fields.problems:
        fields.problems["vmid"] = "required (or send uuid, the guest's SMBIOS UUID)"
    # 1% slack: guests round MB independently.
    if mem_used is not None and mem_total is not None and mem_used > mem_total * 1.01 + MB:
        fields.problems["ramUsage"] = "larger than ramTotal"
    if disk_used is not None and disk_total is not None and disk_used > disk_total * 1.01 + MB:
        fields.problems["diskUsage"] = "larger than diskTotal"
    if fields.problems:
        return fields.problems
    heartbeat = Heartbeat(
        received=received,
        hostname=hostname or "",
        node=node,
        status=status,
        cpu_ratio=cpu / 100 if cpu is not None else None,
        mem_used=mem_used,
        mem_total=mem_total,
        disk_used=disk_used,
        disk_total=disk_total,
        uptime=uptime,
        disks=disks,
        net_rx=int(net_rx) if net_rx is not None else None,
        net_tx=int(net_tx) if net_tx is not None else None,
        load1=load1,
        agent_version=agent_version,
        guest_timestamp=guest_timestamp,
    )
    return Report(vmid=vmid, cluster=cluster, uuid=uuid.lower() if uuid else None, heartbeat=heartbeat,
                  disks_dropped=fields.disks_dropped)


REPORT_PATH = "/api/health/report"
# (mimetype, X-API-Key or None, a callable reading the body, client address) -> (HTTP status, JSON reply)
ReportHandler = Callable[[str, "str | None", Callable[[], bytes], "str | None"], tuple[int, dict[str, Any]]]


class FastReports:
    """WSGI middleware: the ordinary heartbeat (a JSON body with a Content-Length within the limit) is
    answered without the web framework's request and response objects, which cost as much CPU as the
    report's own checks; the same handler decides and the reply bytes are the same. Anything unusual
    (no length, too large, another path or method) goes to the framework as before.
    """

    def __init__(self, app: Callable[..., Any], handle: ReportHandler, max_bytes: int,
                 dumps: Callable[..., str]):
        self.app, self.handle, self.max_bytes, self.dumps = app, handle, max_bytes, dumps

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        length = environ.get("CONTENT_LENGTH") or ""
        if environ.get("PATH_INFO") != REPORT_PATH or environ.get("REQUEST_METHOD") != "POST" \
                or not length.isdigit() or int(length) > self.max_bytes or environ.get("SCRIPT_NAME"):
            return self.app(environ, start_response)
        size = int(length)
        mimetype = (environ.get("CONTENT_TYPE") or "").partition(";")[0].strip().lower()
        try:
            status, reply = self.handle(mimetype, environ.get("HTTP_X_API_KEY"),
                                        lambda: environ["wsgi.input"].read(size), environ.get("REMOTE_ADDR"))
        except OSError:  # the client went away or was too slow: the server closes the connection
            raise
        except Exception:  # what Flask would do: log it and answer 500 in the API's JSON shape
            log.exception("heartbeat report failed")
            status, reply = 500, {"success": False, "error": "internal error"}
        body = (self.dumps(reply, separators=(",", ":")) + "\n").encode()
        start_response(f"{status} {HTTP_STATUS_CODES[status].upper()}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
