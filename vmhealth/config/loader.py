"""The one configuration file shared by every component.

One YAML file (the DESIGN's configuration section) is read, then environment variables override
single keys (`VMHEALTH_EXPORTER_LISTEN`, `VMHEALTH_CLUSTERS_0_TOKEN_SECRET`), then secrets named
`<key>_file` are read from files. Every problem is collected with its path
(`clusters[0].token_secret: missing`) so that `vmhealth check-config` and a refusing server print
the same complete list instead of failing on the first one.

Only the standard library is needed here (PyYAML when the file is YAML rather than JSON): the agent
imports this module inside guests.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from vmhealth.durations import parse_duration

log = logging.getLogger(__name__)
ENV_PREFIX = "VMHEALTH_"
DEFAULT_CONFIG_PATH = "vmhealth.yml"
# Environment variables that select or steer a program (or the test suite) rather than set a key.
NON_KEY_ENV = {
    "VMHEALTH_CONFIG", "VMHEALTH_LOG_LEVEL", "VMHEALTH_LOG_FORMAT",
    "VMHEALTH_REQUIRE_POSTGRES", "VMHEALTH_REQUIRE_BINARIES", "VMHEALTH_TEST_POSTGRES_URL", "VMHEALTH_FORBID_SKIPS",
}
_ENV_LIST_SLOTS = 16
_REQUIRED = object()


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` holds one `path: what` line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Key:
    """One leaf of the schema: its kind, default and limits."""

    kind: str  # str | int | float | bool | duration | listen | url | urllist | strlist | intlist | percent | ratio
    default: Any = None
    secret: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    doc: str = ""


@dataclass(frozen=True)
class Section:
    """A mapping of named keys and sections; `repeated` makes it a list of such mappings."""

    keys: Mapping[str, Key | Section]
    repeated: bool = False
    doc: str = ""


@dataclass
class _Loader:
    problems: list[str] = field(default_factory=list)

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")


def _tls_server_keys() -> dict[str, Key]:
    """A listener's TLS keys (exporter-toolkit's tls_server_config, one file for everything)."""
    return {
        "tls_cert_file": Key("str", None, doc="serve HTTPS with this PEM certificate (chain); re-read on change"),
        "tls_key_file": Key("str", None, doc="its private key"),
        "tls_client_ca_file": Key("str", None, doc="require client certificates signed by this CA (mutual TLS)"),
        "tls_min_version": Key("str", "1.2", choices=("1.2", "1.3")),
    }


def _policy_section() -> Section:
    return Section(
        {
            "dry_run": Key("bool", False, doc="decide and record everything, touch nothing"),
            "enabled": Key("bool", True, doc="kill switch: false records alerts but never acts"),
            "max_attempts": Key("int", 3, minimum=1, maximum=100, doc="resets per incident before quarantine"),
            "cooldown": Key("duration", "10m", doc="wait after an attempt before the next (doubles each time)"),
            "max_cooldown": Key("duration", "1h", doc="cap of the doubling cooldown"),
            "boot_grace": Key("duration", "3m", doc="a guest up for less than this is still booting"),
            "max_actions_per_hour": Key("int", 10, minimum=0, doc="global rate limit of Proxmox actions"),
            "max_concurrent_actions": Key("int", 2, minimum=1, maximum=64, doc="actions in flight at once"),
            "max_hung_fraction": Key(
                "ratio", 0.3, doc="circuit breaker: above this share of a cluster hung, act on none"
            ),
            "opt_in": Key("bool", False, doc="act only on guests in allow_vmids or tagged with allow_tags"),
            "allow_vmids": Key("intlist", [], doc="guests that may be reset (with opt_in)"),
            "allow_tags": Key("strlist", ["vmhealth-reset"], doc="Proxmox tags that allow resets (with opt_in)"),
            "deny_vmids": Key("intlist", [], doc="never reset these guests; wins over allow"),
            "deny_tags": Key("strlist", ["vmhealth-noreset"], doc="never reset guests with these tags"),
            "escalate": Key("bool", False, doc="after a failed reset, stop + start (not HA-managed guests)"),
            "task_timeout": Key("duration", "2m", doc="how long to follow a reset task's UPID"),
            "circuit_min_hung": Key("int", 2, minimum=1, doc="the circuit breaker needs at least this many hung"),
            "retry_interval": Key("duration", "1m", doc="after a skip for a passing reason, next look no sooner"),
            "incident_expiry": Key(
                "duration", "15m", doc="an incident with no notification this long closes as expired (3x the "
                "webhook route's repeat_interval of 5m: a firing alert is sent again at least that often)"
            ),
            "pause_alert_after": Key(
                "duration", "2h", doc="a runtime pause of automatic remediation longer than this fires "
                "VMHealthRemediationPaused"),
            "guest_agent_check": Key(
                "str", "auto", choices=("auto", "off"),
                doc="auto: before a reset, ping the QEMU guest agent where one is configured; an answer refuses",
            ),
        }
    )


SCHEMA = Section(
    {
        "clusters": Section(
            {
                "name": Key("str", _REQUIRED, doc="the `cluster` label"),
                "host": Key("str", _REQUIRED, doc="host[:port] of any node's API, port 8006 by default"),
                "token_id": Key("str", None, doc="API token id, USER@REALM!TOKENID"),
                "token_secret": Key("str", None, secret=True, doc="API token secret (UUID)"),
                "user": Key("str", None, doc="USER@REALM, with password, when no token is used"),
                "password": Key("str", None, secret=True),
                "verify_ssl": Key("bool", True, doc="check the API's TLS certificate"),
                "ca_bundle": Key("str", None, doc="PEM file of the CA that signed the API's certificate"),
                "timeout": Key("duration", "10s", doc="per Proxmox API call"),
            },
            repeated=True,
        ),
        "thresholds": Section(
            {
                "cpu_percent": Key("percent", 80.0, doc="warning above this guest CPU use"),
                "ram_percent": Key("percent", 90.0, doc="warning above this guest memory use"),
                "disk_percent": Key("percent", 90.0, doc="warning above this guest disk use"),
                "stale_timeout": Key(
                    "duration", "90s", doc="a heartbeat older than this is stale (three missed 30 s heartbeats)"
                ),
                "io_window": Key(
                    "duration", "60s", doc="a guest whose disk writes + network transmit stay at or below "
                    "io_idle_bytes_per_second this long is I/O-idle"
                ),
                "io_idle_bytes_per_second": Key(
                    "float", 1024.0, minimum=0, doc="disk writes + network transmit a guest may grow by and stay idle"
                ),
                "mass_loss_fraction": Key(
                    "ratio", 0.5, doc="share of a cluster's guests stale at once that means monitoring broke"
                ),
            }
        ),
        "exporter": Section(
            {
                "listen": Key("listen", "127.0.0.1:9747"),
                "poll_interval": Key("duration", "15s", doc="how often each cluster is read"),
                "poll_offset": Key(
                    "duration", None, doc="poll on the clock, this far into each poll_interval (stagger a pair: "
                    "0s on one replica, half the interval on the other); the first poll waits for its slot"),
                "api_key": Key("str", None, secret=True, doc="agents' shared key; per-VM keys derive from it"),
                "read_token": Key(
                    "str", None, secret=True,
                    doc="when set, /metrics and the read API need Authorization: Bearer <read_token> (Prometheus)"),
                "per_vm_keys": Key(
                    "bool", True, doc="only per-VM keys HMAC(api_key, cluster:vmid); false accepts the shared key"),
                "database_url": Key("url", "sqlite:///vmhealth-exporter.db"),
                "flush_interval": Key("duration", "5s", doc="write-behind period of last-seen state"),
                "max_unknown_guests": Key(
                    "int", 100, minimum=0, doc="reports accepted for guests Proxmox does not list"
                ),
                "max_body_bytes": Key("int", 65536, minimum=1024, doc="larger reports get 413"),
                "uuid_lookups_per_poll": Key("int", 20, minimum=0, doc="VM config reads to map SMBIOS UUIDs"),
                "status_checks_per_poll": Key(
                    "int", 20, minimum=0, doc="status/current reads of silent guests, for qmpstatus"
                ),
                "monitor_tags": Key("strlist", [], doc="when set, only guests with one of these tags"),
                "ignore_tags": Key("strlist", ["vmhealth-ignore"], doc="guests never monitored"),
                "threads": Key("int", 8, minimum=1, maximum=256, doc="gunicorn threads"),
                "max_connections_per_address": Key(
                    "int", 64, minimum=1, maximum=10000,
                    doc="connections one client address may hold open; more get 503 (raise behind NAT)"),
                "auth_failures_per_minute": Key(
                    "int", 20, minimum=0, maximum=100000,
                    doc="failed authentications one address may make a minute; past a quarter of them each "
                        "refusal waits (up to 1s), past all 429 (0: no throttle)"),
                **_tls_server_keys(),
            }
        ),
        "webhook": Section(
            {
                "listen": Key("listen", "127.0.0.1:9749"),
                "token": Key("str", None, secret=True, doc="Alertmanager's bearer token"),
                "admin_token": Key("str", None, secret=True, doc="manual reset / release"),
                "viewer_token": Key("str", None, secret=True, doc="read-only: history and the console"),
                "metrics_token": Key(
                    "str", None, secret=True,
                    doc="when set, /metrics needs it (or the viewer or admin token) as a bearer token (Prometheus)"),
                "public_history": Key(
                    "bool", False, doc="serve the history without a token (warned about at start)"),
                "database_url": Key("url", "sqlite:///vmhealth-webhook.db"),
                "threads": Key("int", 8, minimum=1, maximum=256, doc="gunicorn threads"),
                "max_connections_per_address": Key(
                    "int", 64, minimum=1, maximum=10000,
                    doc="connections one client address may hold open; more get 503 (raise behind NAT)"),
                "auth_failures_per_minute": Key(
                    "int", 20, minimum=0, maximum=100000,
                    doc="failed authentications one address may make a minute; past a quarter of them each "
                        "refusal waits (up to 1s), past all 429 (0: no throttle)"),
                "claim_lease": Key("duration", "5m", doc="a claimed alert not finished by then is taken over"),
                "history_retention": Key(
                    "duration", "90d", doc="decisions older than this are deleted (at least 1d)"),
                "prometheus_url": Key("url", None, doc="Prometheus to read a guest's heartbeat age from before acting"),
                "exporter_urls": Key(
                    "urllist", [], doc="exporters to read a guest's heartbeat age from, without prometheus_url"),
                "grafana_url": Key("url", None, doc="the console links each guest to its Grafana dashboard here"),
                "console_session": Key("duration", "12h", doc="a console login lasts this long"),
                "proxy_hops": Key(
                    "int", 0, minimum=0, maximum=5,
                    doc="reverse proxies in front that set X-Forwarded-For/-Proto/-Host/-Prefix (trusted)"),
                "policy": _policy_section(),
                **_tls_server_keys(),
                "ca_bundle": Key("str", None, doc="CA to verify https exporter_urls with"),
                "client_cert_file": Key("str", None, doc="certificate presented to exporter_urls (mutual TLS)"),
                "client_key_file": Key("str", None, doc="its private key"),
            }
        ),
        "agent": Section(
            {
                "exporter_url": Key("url", "http://127.0.0.1:9747", doc="the one exporter (or use exporter_urls)"),
                "exporter_urls": Key(
                    "urllist", [], doc="every exporter replica; each report goes to all of them"),
                "api_key": Key("str", None, secret=True),
                "vmid": Key("int", None, minimum=1, maximum=999999999),
                "uuid": Key("str", None, doc="SMBIOS UUID to send instead of reading the firmware's (non-root)"),
                "cluster": Key("str", None, doc="cluster name, when the exporter serves several"),
                "interval": Key("duration", "30s"),
                "timeout": Key("duration", "10s"),
                "mode": Key("str", "push", choices=("push", "pull", "both")),
                "listen": Key("listen", "0.0.0.0:9748"),
                "mounts": Key("strlist", [], doc="extra mountpoints to report besides the root volume"),
                "ca_bundle": Key("str", None, doc="PEM file of the CA that signed the exporter's certificate"),
                "verify_ssl": Key("bool", True),
                "client_cert_file": Key("str", None, doc="certificate presented to the exporter (mutual TLS)"),
                "client_key_file": Key("str", None, doc="its private key"),
                **_tls_server_keys(),
            }
        ),
    }
)

# The components that keep a database of their own (vmhealth.db migrates each).
DATABASE_COMPONENTS = ("exporter", "webhook")

# Which sections and keys each program cannot start without.
COMPONENT_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "exporter": ("clusters", "exporter.api_key"),
    "webhook": ("clusters", "webhook.token", "webhook.admin_token"),
    "agent": ("agent.api_key",),
}


def _keypath(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def _did_you_mean(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(key: Key, value: Any, path: str, loader: _Loader, from_env: bool) -> Any:
    """The value converted to the key's kind, or None after recording why it cannot be."""
    if value is None:
        return None
    kind = key.kind
    try:
        if kind in ("str", "url", "listen"):
            if from_env or (isinstance(value, int | float) and not isinstance(value, bool) and kind == "str"):
                value = str(value)
            if not isinstance(value, str):
                raise ValueError(f"expected a string, got {type(value).__name__}")
            if kind == "listen":
                _check_listen(value)
            if kind == "url":
                _check_url(value)
            if key.choices and value not in key.choices:
                raise ValueError(f"{value!r} is not one of {', '.join(key.choices)}")
            return value
        if kind == "bool":
            if from_env or isinstance(value, str):
                lowered = str(value).strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError(f"expected true or false, got {value!r}")
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if kind == "duration":
            return parse_duration(value)
        if kind in ("int", "float", "percent", "ratio"):
            number = _number(value, integer=kind == "int")
            low, high = key.minimum, key.maximum
            if kind == "percent":
                low, high = 0, 100
            if kind == "ratio":
                low, high = 0, 1
            if low is not None and number < low:
                raise ValueError(f"{number} is below the minimum {low:g}")
            if high is not None and number > high:
                raise ValueError(f"{number} is above the maximum {high:g}")
            return number
        if kind == "urllist":
            return _url_list(value)
        if kind in ("strlist", "intlist"):
            if isinstance(value, str):
                value = [part.strip() for part in value.split(",") if part.strip()]
            if not isinstance(value, list):
                raise ValueError(f"expected a list, got {type(value).__name__}")
            if kind == "intlist":
                return [_number(item, integer=True) for item in value]
            if not all(isinstance(item, str) for item in value):
                raise ValueError("expected a list of strings")
            return list(value)
    except ValueError as exc:
        loader.problem(path, str(exc))
        return None
    raise AssertionError(f"unknown kind {kind}")


def _number(value: Any, integer: bool) -> float | int:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            raise ValueError(f"expected {'a whole number' if integer else 'a number'}, got {value!r}") from None
    if integer:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        return value
    if not isinstance(value, int | float) or value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def _check_listen(value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT (for example 127.0.0.1:9747)")


def is_loopback(listen: str) -> bool:
    """Whether a HOST:PORT listen address is reachable from this machine only."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(value: str) -> None:
    parts = urlsplit(value)
    if not parts.scheme or not (parts.netloc or parts.path):
        raise ValueError(f"{value!r} is not a URL")


def _url_list(value: Any) -> list[str]:
    """A list of distinct http(s) URLs (a comma-separated string from the environment too)."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("expected a list of URLs")
    seen: set[str] = set()
    for index, item in enumerate(value):
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"item {index} {item!r} is not an http:// or https:// URL")
        if item.rstrip("/") in seen:
            raise ValueError(f"item {index} {item!r} is listed twice")
        seen.add(item.rstrip("/"))
    return list(value)


def split_listen(value: str) -> tuple[str, int]:
    """`host:port` (IPv6 hosts in brackets) as a (host, port) pair."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _build(schema: Section, raw: Any, path: str, loader: _Loader) -> SimpleNamespace:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        loader.problem(path or "(top level)", f"expected a mapping of keys, got {type(raw).__name__}")
        raw = {}
    out = SimpleNamespace()
    allowed = set(schema.keys)
    allowed |= {f"{name}_file" for name, key in schema.keys.items() if isinstance(key, Key) and key.secret}
    for name in raw:
        if name not in allowed:
            shown = str(name) if str(name).isidentifier() else repr(str(name))  # "", newlines, ": " stay visible
            loader.problem(_keypath(path, shown), "unknown key" + _did_you_mean(str(name), allowed))
    for name, spec in schema.keys.items():
        here = _keypath(path, name)
        if isinstance(spec, Section):
            if spec.repeated:
                items = raw.get(name)
                if items is None:
                    items = []
                if not isinstance(items, list):
                    loader.problem(here, f"expected a list, got {type(items).__name__}")
                    items = []
                setattr(out, name, [_build(spec, item, f"{here}[{i}]", loader) for i, item in enumerate(items)])
            else:
                setattr(out, name, _build(spec, raw.get(name), here, loader))
            continue
        value = raw.get(name)
        if spec.secret and raw.get(f"{name}_file") is not None:
            if value is not None:
                loader.problem(here, f"set both {name} and {name}_file; keep one")
            value = _read_secret_file(raw[f"{name}_file"], f"{here}_file", loader)
        from_env = isinstance(value, _FromEnv)
        if from_env:
            value = str(value)
        if value is None:
            value = spec.default
        if value is _REQUIRED:
            loader.problem(here, "missing")
            value = None
        setattr(out, name, _coerce(spec, value, here, loader, from_env))
    return out


def _read_secret_file(filename: Any, path: str, loader: _Loader) -> str | None:
    if not isinstance(filename, str) or not filename:
        loader.problem(path, "expected a file name")
        return None
    try:
        text = Path(filename).read_text(encoding="utf-8").strip()
    except OSError as exc:
        loader.problem(path, f"cannot read {filename}: {exc.strerror or exc}")
        return None
    if not text:
        loader.problem(path, f"{filename} is empty")
        return None
    _warn_if_others_read(path, filename)
    return text


def _warn_if_others_read(path: str, filename: str) -> None:
    """A secret (a key, a token, a private key) that its group or others can read is logged, not refused."""
    try:
        full = Path(filename).stat().st_mode
    except OSError:
        return
    mode = full & 0o077
    if mode:
        log.warning("%s: %s can be read by %s (mode %o); chmod 600 it", path, filename,
                    "group and others" if mode & 0o007 and mode & 0o070 else "others" if mode & 0o007 else "its group",
                    full & 0o777)


class _FromEnv(str):
    """A string that came from the environment, so it is parsed as text whatever the key's kind."""


def _env_names(schema: Section, raw: dict[str, Any], prefix: str) -> dict[str, tuple[dict[str, Any], str]]:
    """Every environment variable name that can set a key, mapped to (mapping to write, key)."""
    names: dict[str, tuple[dict[str, Any], str]] = {}
    for name, spec in schema.keys.items():
        env = f"{prefix}{name.upper()}"
        if isinstance(spec, Section):
            if spec.repeated:
                items = raw.get(name)
                if not isinstance(items, list):
                    items = []
                    raw[name] = items
                for i in range(max(len(items), _ENV_LIST_SLOTS)):
                    slot = items[i] if i < len(items) else None
                    if slot is not None and not isinstance(slot, dict):
                        continue
                    lazy = slot if isinstance(slot, dict) else _LazyItem(items, i)
                    names.update(_env_names(spec, lazy, f"{env}_{i}_"))
            else:
                child = raw.get(name)
                if not isinstance(child, dict):
                    child = {} if child is None else child
                    if isinstance(child, dict):
                        raw[name] = child
                if isinstance(child, dict):
                    names.update(_env_names(spec, child, f"{env}_"))
            continue
        names[env] = (raw, name)
        if spec.secret:
            names[f"{env}_FILE"] = (raw, f"{name}_file")
    return names


class _LazyItem(dict):
    """A list item that comes into being only when an environment variable writes to it."""

    def __init__(self, items: list[Any], index: int):
        super().__init__()
        self._items, self._index = items, index

    def __setitem__(self, key: str, value: Any) -> None:
        while len(self._items) <= self._index:
            self._items.append({})
        self._items[self._index][key] = value


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str], loader: _Loader) -> None:
    given = set(raw)
    names = _env_names(SCHEMA, raw, ENV_PREFIX)
    for env, value in sorted(environ.items()):
        if not env.startswith(ENV_PREFIX) or env in NON_KEY_ENV:
            continue
        target = names.get(env)
        if target is None:
            loader.problem(env, "unknown environment variable" + _did_you_mean(env, names))
            continue
        mapping, key = target
        mapping[key] = _FromEnv(value)
    # Drop the empty sections that only the name lookup created.
    for name in [n for n, v in raw.items() if n not in given and v in ({}, [])]:
        del raw[name]


def read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw mapping in a YAML (or JSON) file; ConfigError naming the file when it cannot be read."""
    filename = str(path)
    try:
        text = Path(filename).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{filename}: no such file (use --config FILE, or write {DEFAULT_CONFIG_PATH})"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{filename}: not UTF-8 text (byte {exc.start} cannot be decoded)"]) from None
    except OSError as exc:
        raise ConfigError([f"{filename}: cannot read: {exc.strerror or exc}"]) from None
    if not text.strip():
        return {}
    try:
        import yaml
    except ImportError:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError([f"{filename}: PyYAML is not installed, and the file is not JSON ({exc})"]) from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            reason = getattr(exc, "problem", None) or str(exc)
            raise ConfigError([f"{filename}: not valid YAML{where}: {reason}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{filename}: expected a mapping of sections at the top, got {type(data).__name__}"])
    return data


def load(
    path: str | os.PathLike[str] | None = None,
    components: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    raw: dict[str, Any] | None = None,
) -> SimpleNamespace:
    """The validated configuration, or ConfigError listing every problem.

    `path` None means ./vmhealth.yml when it exists, else environment variables only. `components`
    names the programs about to run (`exporter`, `webhook`, `agent`): their required keys must be set.
    """
    environ = os.environ if environ is None else environ
    if raw is None:
        if path is None and Path(DEFAULT_CONFIG_PATH).exists():
            path = DEFAULT_CONFIG_PATH
        raw = read_file(path) if path is not None else {}
    raw = _deep_copy(raw)
    loader = _Loader()
    _apply_env(raw, environ, loader)
    config = _build(SCHEMA, raw, "", loader)
    _resolve_agent_urls(raw, config, loader)
    _check_clusters(config, loader)
    _check_thresholds(config, loader)
    _check_secrets(config, loader)
    _check_retention(config, loader)
    _check_policy(config, loader)
    _check_tls(config, loader)
    _check_poll_offset(config, loader)
    for component in components:
        _check_required(config, component, loader)
    if loader.problems:
        raise ConfigError(loader.problems)
    return config


MIN_SECRET_LENGTH = 16


def _check_secrets(config: SimpleNamespace, loader: _Loader) -> None:
    """Keys and tokens long enough not to be guessed, and Alertmanager's token no admin token."""
    for path in ("exporter.api_key", "exporter.read_token", "agent.api_key", "webhook.token", "webhook.admin_token",
                 "webhook.viewer_token", "webhook.metrics_token"):
        section, key = path.split(".")
        value = getattr(getattr(config, section), key)
        if isinstance(value, str) and len(value) < MIN_SECRET_LENGTH:
            loader.problem(path, f"shorter than {MIN_SECRET_LENGTH} characters; use a random one "
                           "(`openssl rand -hex 32`)")
    token, admin = config.webhook.token, config.webhook.admin_token
    if isinstance(token, str) and isinstance(admin, str) and token == admin:
        loader.problem("webhook.admin_token", "is the same as webhook.token: Alertmanager's token would then "
                       "force resets and end quarantines; give each its own secret")
    viewer = config.webhook.viewer_token
    if isinstance(viewer, str) and viewer in (token, admin):
        same = "webhook.admin_token" if viewer == admin else "webhook.token"
        loader.problem("webhook.viewer_token", f"is the same as {same}: a viewer could then act; give each its "
                       "own secret")
    metrics = config.webhook.metrics_token
    if isinstance(metrics, str) and metrics in (token, admin):
        same = "webhook.admin_token" if metrics == admin else "webhook.token"
        loader.problem("webhook.metrics_token", f"is the same as {same}: Prometheus could then act; give each its "
                       "own secret")
    read = config.exporter.read_token
    if isinstance(read, str) and read == config.exporter.api_key:
        loader.problem("exporter.read_token", "is the same as exporter.api_key: a guest holding the shared key "
                       "could then read the whole fleet; give each its own secret")


def _resolve_agent_urls(raw: dict[str, Any], config: SimpleNamespace, loader: _Loader) -> None:
    """`agent.exporter_urls` is the list every report goes to; `exporter_url` is its one-item form.
    Both given (in the file or the environment) is a mistake: which one was meant cannot be told."""
    agent_raw = raw.get("agent")
    given = agent_raw if isinstance(agent_raw, Mapping) else {}
    agent = config.agent
    if given.get("exporter_url") is not None and given.get("exporter_urls") is not None:
        loader.problem("agent.exporter_urls", "set both agent.exporter_url and agent.exporter_urls; keep one "
                       "(exporter_urls lists every exporter, exporter_url is its one-item form)")
    if not agent.exporter_urls and isinstance(agent.exporter_url, str):
        agent.exporter_urls = [agent.exporter_url]
    elif agent.exporter_urls:
        agent.exporter_url = agent.exporter_urls[0]


def _check_retention(config: SimpleNamespace, loader: _Loader) -> None:
    retention = config.webhook.history_retention
    if isinstance(retention, float) and retention < 86400:
        loader.problem("webhook.history_retention", "at least 1d: the rate limit and the cooldowns read the last "
                       "day of decisions")


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_TOKEN_ID = re.compile(r"^[^@!\s]+@[^@!\s]+![A-Za-z][A-Za-z0-9.\-_]*$")


def _check_clusters(config: SimpleNamespace, loader: _Loader) -> None:
    seen: set[str] = set()
    for i, cluster in enumerate(config.clusters):
        here = f"clusters[{i}]"
        if cluster.name is not None:
            if not _CLUSTER_NAME.fullmatch(cluster.name):  # fullmatch: "$" would let "lab\n" through
                loader.problem(f"{here}.name", "use letters, digits, '.', '-' and '_' only")
            if cluster.name in seen:
                loader.problem(f"{here}.name", f"{cluster.name!r} is used by another cluster")
            seen.add(cluster.name)
        if cluster.token_id or cluster.token_secret:
            if not cluster.token_id:
                loader.problem(f"{here}.token_id", "missing (token_secret is set)")
            elif not _TOKEN_ID.match(cluster.token_id):
                loader.problem(f"{here}.token_id", f"{cluster.token_id!r} is not USER@REALM!TOKENID")
            if not cluster.token_secret:
                loader.problem(f"{here}.token_secret", "missing")
            if cluster.user or cluster.password:
                loader.problem(here, "set either token_id + token_secret or user + password, not both")
        elif cluster.user or cluster.password:
            if not cluster.user:
                loader.problem(f"{here}.user", "missing (password is set)")
            if not cluster.password:
                loader.problem(f"{here}.password", "missing")
        else:
            loader.problem(f"{here}.token_secret", "missing (give token_id + token_secret, or user + password)")
        if cluster.ca_bundle and not Path(cluster.ca_bundle).is_file():
            loader.problem(f"{here}.ca_bundle", f"no such file: {cluster.ca_bundle}")


def _check_thresholds(config: SimpleNamespace, loader: _Loader) -> None:
    if config.thresholds.io_window is not None and config.thresholds.io_window <= 0:
        loader.problem("thresholds.io_window", "must be longer than 0s")


def _check_poll_offset(config: SimpleNamespace, loader: _Loader) -> None:
    offset, interval = config.exporter.poll_offset, config.exporter.poll_interval
    if offset is not None and interval is not None and not 0 <= offset < interval:
        loader.problem("exporter.poll_offset", f"must be from 0s to below exporter.poll_interval ({interval:g}s)")


def _check_policy(config: SimpleNamespace, loader: _Loader) -> None:
    expiry = config.webhook.policy.incident_expiry
    if expiry is not None and expiry <= 0:
        loader.problem("webhook.policy.incident_expiry", "must be longer than 0s")


def _check_tls(config: SimpleNamespace, loader: _Loader) -> None:
    """TLS files that can be read, match and are in date; TLS keys only where they can be used."""
    agent = config.agent
    if agent.mode == "push":
        for key in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            if getattr(agent, key):
                loader.problem(f"agent.{key}", "the agent serves nothing with mode: push; set mode: pull or both, "
                               "or use client_cert_file for a client certificate")
    urls = [str(url) for url in (agent.exporter_urls or [agent.exporter_url])]
    if agent.mode != "pull" and not any(url.lower().startswith("https:") for url in urls):
        for key in ("ca_bundle", "client_cert_file", "client_key_file"):
            if getattr(agent, key):
                loader.problem(f"agent.{key}", f"no exporter of agent.exporter_urls is https:// ({', '.join(urls)})")
    checks = [(s, "tls_cert_file", "tls_key_file", "tls_client_ca_file") for s in ("exporter", "webhook", "agent")]
    checks += [(s, "client_cert_file", "client_key_file", "ca_bundle") for s in ("webhook", "agent")]
    for section, cert_key, key_key, ca_key in checks:
        node = getattr(config, section)
        cert, key, ca = getattr(node, cert_key), getattr(node, key_key), getattr(node, ca_key)
        if not (cert or key or ca):
            continue
        if (not cert or not key) and (cert or key or ca_key != "ca_bundle"):
            missing = key_key if cert else cert_key
            present = cert_key if cert else key_key if key else ca_key
            loader.problem(f"{section}.{missing}", f"missing ({present} is set)")
            continue
        from vmhealth.tls import file_problems

        where = {"cert": cert_key, "key": key_key, "ca": ca_key}
        found = file_problems(cert, key, ca)
        for which, message in found:
            loader.problem(f"{section}.{where[which]}", message)
        if key and not found:
            _warn_if_others_read(f"{section}.{key_key}", key)


def _check_required(config: SimpleNamespace, component: str, loader: _Loader) -> None:
    for required in COMPONENT_REQUIREMENTS.get(component, ()):
        if required == "clusters":
            if not config.clusters:
                loader.problem("clusters", f"missing: the {component} needs at least one Proxmox cluster")
            continue
        section, key = required.split(".")
        if getattr(getattr(config, section), key) is None:
            path = f"{required}"
            if not any(p.startswith(path + ":") for p in loader.problems):
                loader.problem(path, "missing")


def cluster_names(config: SimpleNamespace) -> list[str]:
    """The configured cluster names, in file order."""
    return [cluster.name for cluster in config.clusters]


def redacted(config: SimpleNamespace) -> dict[str, Any]:
    """The configuration as plain data with every secret replaced, for logs and `check-config`."""
    return _redact(SCHEMA, config)


def _redact(schema: Section, node: SimpleNamespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in schema.keys.items():
        value = getattr(node, name)
        if isinstance(spec, Section):
            out[name] = [_redact(spec, v) for v in value] if spec.repeated else _redact(spec, value)
        elif spec.secret and value is not None:
            out[name] = "<set>"
        elif spec.kind == "url" and isinstance(value, str) and url_password(value):
            out[name] = value.replace(f":{url_password(value)}@", ":<set>@", 1)
        else:
            out[name] = value
    return out


def url_password(url: str) -> str | None:
    """The password in `scheme://user:password@host/…` (a database URL), which is a secret too."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def secrets_of(config: SimpleNamespace) -> list[str]:
    """Every secret value in the configuration, so that log filters can mask them."""
    found: list[str] = []

    def walk(schema: Section, node: SimpleNamespace) -> None:
        for name, spec in schema.keys.items():
            value = getattr(node, name)
            if isinstance(spec, Section):
                for child in value if spec.repeated else [value]:
                    walk(spec, child)
            elif spec.secret and value:
                found.append(str(value))
            elif spec.kind == "url" and isinstance(value, str) and url_password(value):
                found.append(str(url_password(value)))

    walk(SCHEMA, config)
    return found
