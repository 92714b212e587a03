"""The one configuration file shared by every component.

One YAML file (the DESIGN's configuration section) is read, then environment variables override
single keys (`VMHEALTH_EXPORTER_LISTEN`, `VMHEALTH_CLUSTERS_0_TOKEN_SECRET`), then secrets named
`<key>_file` are read from files. Every problem is collected with its path
(`clusters[0].token_secret: missing`) so that `vmhealth check-config` and a refusing server print
the same complete list instead of failing on the first one.

Each section is a frozen dataclass (`vmhealth.config.root.Config` and the classes it names), so a
component is handed the sections it reads, typed. Only the standard library is needed here (PyYAML
when the file is YAML rather than JSON): the agent imports this package inside guests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import checks
from .env import FromEnv, apply_env
from .keys import REQUIRED, Key, Section
from .problems import ConfigError, Problems, did_you_mean, keypath
from .root import SCHEMA, Config
from .secret_files import read_secret_file
from .values import coerce

DEFAULT_CONFIG_PATH = "vmhealth.yml"


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
) -> Config:
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
    problems = Problems()
    apply_env(raw, environ, problems)
    config = _resolve_agent_urls(raw, _build(SCHEMA, raw, "", problems), problems)
    checks.check(config, components, problems)
    if problems.lines:
        raise ConfigError(problems.lines)
    return config


def load_from_environment(component: str) -> Config:
    """The configuration a WSGI factory or a gunicorn.conf.py runs with, chosen as the `vmhealth`
    command's `--config` chooses it: the file named by $VMHEALTH_CONFIG, else ./vmhealth.yml if present,
    else environment variables only; the keys `component` needs must be set."""
    return load(os.environ.get("VMHEALTH_CONFIG"), components=(component,))


def _build(schema: Section, raw: Any, path: str, problems: Problems) -> Any:
    """An instance of the section's class from its raw mapping; a key that cannot be read is None."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        problems.add(path or "(top level)", f"expected a mapping of keys, got {type(raw).__name__}")
        raw = {}
    values: dict[str, Any] = {}
    allowed = set(schema.keys)
    allowed |= {f"{name}_file" for name, key in schema.keys.items() if isinstance(key, Key) and key.secret}
    for name in raw:
        if name not in allowed:
            shown = str(name) if str(name).isidentifier() else repr(str(name))  # "", newlines, ": " stay visible
            problems.add(keypath(path, shown), "unknown key" + did_you_mean(str(name), allowed))
    for name, spec in schema.keys.items():
        here = keypath(path, name)
        if isinstance(spec, Section):
            if spec.repeated:
                items = raw.get(name)
                if items is None:
                    items = []
                if not isinstance(items, list):
                    problems.add(here, f"expected a list, got {type(items).__name__}")
                    items = []
                values[name] = [_build(spec, item, f"{here}[{i}]", problems) for i, item in enumerate(items)]
            else:
                values[name] = _build(spec, raw.get(name), here, problems)
            continue
        value = raw.get(name)
        if spec.secret and raw.get(f"{name}_file") is not None:
            if value is not None:
                problems.add(here, f"set both {name} and {name}_file; keep one")
            value = read_secret_file(raw[f"{name}_file"], f"{here}_file", problems)
        from_env = isinstance(value, FromEnv)
        if from_env:
            value = str(value)
        if value is None:
            value = spec.default
        if value is REQUIRED:
            problems.add(here, "missing")
            value = None
        values[name] = coerce(spec, value, here, problems, from_env)
    return schema.cls(**values)


def _resolve_agent_urls(raw: dict[str, Any], config: Config, problems: Problems) -> Config:
    """`agent.exporter_urls` is the list every report goes to; `exporter_url` is its one-item form.
    Both given (in the file or the environment) is a mistake: which one was meant cannot be told."""
    agent_raw = raw.get("agent")
    given = agent_raw if isinstance(agent_raw, Mapping) else {}
    agent = config.agent
    if given.get("exporter_url") is not None and given.get("exporter_urls") is not None:
        problems.add("agent.exporter_urls", "set both agent.exporter_url and agent.exporter_urls; keep one "
                     "(exporter_urls lists every exporter, exporter_url is its one-item form)")
    if not agent.exporter_urls and isinstance(agent.exporter_url, str):
        return replace(config, agent=replace(agent, exporter_urls=[agent.exporter_url]))
    if agent.exporter_urls:
        return replace(config, agent=replace(agent, exporter_url=agent.exporter_urls[0]))
    return config


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
