"""The schema's vocabulary: a key's kind, default and limits, and the sections that group keys.

Each section of the file is a frozen dataclass whose fields are declared with `setting()` or
`subsection()`: the class is what a component receives, its fields' metadata is what the loader
checks, so a key's name, type, default and limits are written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

REQUIRED: Any = object()  # the default of a key that has none: leaving it out is a problem


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
    """A mapping of named keys and sections, built into an instance of `cls`; `repeated` makes it a list of them."""

    keys: Mapping[str, Key | Section]
    cls: type
    repeated: bool = False


def setting(kind: str, default: Any = None, *, secret: bool = False, choices: tuple[str, ...] = (),
            minimum: float | None = None, maximum: float | None = None, doc: str = "") -> Any:
    """A section class's field for one key."""
    return field(metadata={"key": Key(kind, default, secret, choices, minimum, maximum, doc)})


def subsection(section_type: type, *, repeated: bool = False) -> Any:
    """A section class's field holding another section (a list of them when `repeated`)."""
    return field(metadata={"section": section_type, "repeated": repeated})


def section_of(section_type: type, repeated: bool = False) -> Section:
    """The schema a section class declares."""
    keys: dict[str, Key | Section] = {}
    for item in fields(section_type):
        if "section" in item.metadata:
            keys[item.name] = section_of(item.metadata["section"], item.metadata["repeated"])
        else:
            keys[item.name] = item.metadata["key"]
    return Section(keys, section_type, repeated)
