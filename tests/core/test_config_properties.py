"""Property tests of the configuration loader: any file, any value for any key and any VMHEALTH_*
variable gives a configuration or a ConfigError whose every line names a path; never another
exception, never a change to the input, and never a secret's value in a message.

Cost: about 10 s.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmhealth.config import SCHEMA, ConfigError, Key, Section, load, read_file

PROPERTY = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SECRET = "s3cret-value-9d1e"  # what every generated secret key holds; it must never be echoed

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
           | st.sampled_from(["5m", "1h30m", "0s", "-1s", "9" * 400 + "s", "127.0.0.1:9747", "host:99999", ":",
                              "sqlite:///x.db", "postgresql://u:pw@h/db", "yes", "off", "1e309", "nan", "²"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=10), inner, max_size=3), max_leaves=8)


def section_strategy(section: Section) -> st.SearchStrategy[dict[str, Any]]:
    """Mappings of the section's own keys (and a stray one) to any values; secret keys hold SECRET."""
    entries: dict[str, st.SearchStrategy[Any]] = {}
    for name, spec in section.keys.items():
        if isinstance(spec, Section):
            inner = section_strategy(spec)
            entries[name] = st.lists(inner, max_size=2) | values if spec.repeated else inner | values
        elif spec.secret:
            entries[name] = st.just(SECRET) | st.just(None)
        else:
            entries[name] = values
    entries["tokn_id"] = values
    return st.fixed_dictionaries({}, optional=entries)


def secrets_in(raw: Any) -> bool:
    return SECRET in repr(raw)


def check(raw: Any, environ: dict[str, str], components: tuple[str, ...]) -> None:
    original = copy.deepcopy(raw)
    try:
        load(raw=raw, environ=environ, components=components)
    except ConfigError as exc:
        assert exc.problems
        for line in exc.problems:
            path, colon, message = line.partition(": ")
            assert colon and path and message, line
            assert SECRET not in line, f"a secret's value in {line!r}"
    assert raw == original, "the loader changed its input"


@PROPERTY
@given(raw=section_strategy(SCHEMA), components=st.sampled_from([(), ("exporter",), ("webhook",), ("agent",)]))
def test_any_values_for_the_schema_keys(raw: dict[str, Any], components: tuple[str, ...]) -> None:
    check(raw, {}, components)


@PROPERTY
@given(raw=values)
def test_any_document(raw: Any) -> None:
    check(raw if isinstance(raw, dict) else {"clusters": raw}, {}, ())


def env_names(section: Section = SCHEMA, prefix: str = "VMHEALTH") -> list[tuple[str, Key]]:
    out = []
    for name, spec in section.keys.items():
        here = f"{prefix}_{name.upper()}"
        if isinstance(spec, Section):
            out += env_names(spec, f"{here}_0" if spec.repeated else here)
        else:
            out.append((here, spec))
    return out


ENV = env_names()


@PROPERTY
@given(picked=st.lists(st.sampled_from(ENV), max_size=5, unique_by=lambda e: e[0]),
       texts=st.lists(st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=30)
                      | st.sampled_from(["5m", "true", "-1", "1e309", "²", "127.0.0.1:0"]), min_size=5, max_size=5))
def test_any_environment_overrides(picked: list[tuple[str, Key]], texts: list[str]) -> None:
    environ = {name: SECRET if key.secret else text for (name, key), text in zip(picked, texts, strict=False)}
    environ["VMHEALTH_NO_SUCH_KEY"] = "x"
    check({}, environ, ("exporter",))


@PROPERTY
@given(body=st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_any_file(tmp_path_factory: Any, body: bytes) -> None:
    path: Path = tmp_path_factory.mktemp("config") / "vmhealth.yml"
    path.write_bytes(body)
    try:
        raw = read_file(path)
    except ConfigError as exc:
        assert exc.problems and all(line.startswith(str(path)) for line in exc.problems)
        return
    check(raw, {}, ())
    assert path.read_bytes() == body
