"""Every problem of a configuration, collected with its path (`clusters[0].token_secret: missing`),
so that `vmhealth check-config` and a refusing server print the same complete list."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` holds one `path: what` line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Problems:
    """The `path: what` lines found so far."""

    lines: list[str] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{path}: {message}")


def keypath(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def did_you_mean(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
