"""The kinds of value a key can hold: a value from the file or the environment converted to its
key's kind, or a problem that says why it cannot be."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from vmhealth.durations import parse_duration

from .keys import Key
from .problems import Problems


def coerce(key: Key, value: Any, path: str, problems: Problems, from_env: bool) -> Any:
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
                check_listen(value)
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
        problems.add(path, str(exc))
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


def check_listen(value: str) -> None:
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


