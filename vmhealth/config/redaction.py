"""Secrets kept out of sight: the configuration with every secret hidden (logs, `check-config --show`),
and the list of secret values that log filters mask."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .keys import Section
from .root import SCHEMA, Config


def redacted(config: Config) -> dict[str, Any]:
    """The configuration as plain data with every secret replaced, for logs and `check-config`."""
    return _redact(SCHEMA, config)


def _redact(schema: Section, node: Any) -> dict[str, Any]:
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


def secrets_of(config: Config) -> list[str]:
    """Every secret value in the configuration, so that log filters can mask them."""
    found: list[str] = []

    def walk(schema: Section, node: Any) -> None:
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
