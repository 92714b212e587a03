"""Secrets named `<key>_file` in the file (or `VMHEALTH_..._FILE`): read from a file, which should be
readable by its owner only."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .problems import Problems

log = logging.getLogger("vmhealth.config")


def read_secret_file(filename: Any, path: str, problems: Problems) -> str | None:
    """The file's stripped text, or None after recording why it cannot be used."""
    if not isinstance(filename, str) or not filename:
        problems.add(path, "expected a file name")
        return None
    try:
        text = Path(filename).read_text(encoding="utf-8").strip()
    except OSError as exc:
        problems.add(path, f"cannot read {filename}: {exc.strerror or exc}")
        return None
    if not text:
        problems.add(path, f"{filename} is empty")
        return None
    warn_if_others_read(path, filename)
    return text


def warn_if_others_read(path: str, filename: str) -> None:
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
