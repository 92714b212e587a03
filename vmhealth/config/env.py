"""Environment variables that override single keys: `VMHEALTH_<SECTION>_<KEY>`, list items by
index (`VMHEALTH_CLUSTERS_0_TOKEN_SECRET`), and `<KEY>_FILE` for a secret read from a file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .keys import Section
from .problems import Problems, did_you_mean
from .root import SCHEMA

ENV_PREFIX = "VMHEALTH_"
# Environment variables that select or steer a program (or the test suite) rather than set a key.
NON_KEY_ENV = {
    "VMHEALTH_CONFIG", "VMHEALTH_LOG_LEVEL", "VMHEALTH_LOG_FORMAT",
    "VMHEALTH_REQUIRE_POSTGRES", "VMHEALTH_REQUIRE_BINARIES", "VMHEALTH_TEST_POSTGRES_URL", "VMHEALTH_FORBID_SKIPS",
}
_ENV_LIST_SLOTS = 16


class FromEnv(str):
    """A string that came from the environment, so it is parsed as text whatever the key's kind."""


def apply_env(raw: dict[str, Any], environ: Mapping[str, str], problems: Problems) -> None:
    """Write each VMHEALTH_* variable's value into `raw` where the file would have set the key."""
    given = set(raw)
    names = _env_names(SCHEMA, raw, ENV_PREFIX)
    for env, value in sorted(environ.items()):
        if not env.startswith(ENV_PREFIX) or env in NON_KEY_ENV:
            continue
        target = names.get(env)
        if target is None:
            problems.add(env, "unknown environment variable" + did_you_mean(env, names))
            continue
        mapping, key = target
        mapping[key] = FromEnv(value)
    # Drop the empty sections that only the name lookup created.
    for name in [n for n, v in raw.items() if n not in given and v in ({}, [])]:
        del raw[name]


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
