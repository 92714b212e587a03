"""What a test needs from the machine: Debian's monitoring binaries, and whether a missing one may skip.

With VMHEALTH_REQUIRE_BINARIES=1 (as in .ci/run) a missing binary fails the test instead of skipping
it; VMHEALTH_REQUIRE_POSTGRES=1 does the same for PostgreSQL (tests/conftest.py).
"""

from __future__ import annotations

import os

import pytest

from vmhealth.stack.binaries import INSTALL_HINT, find_binary


def required(variable: str) -> bool:
    """Whether the environment variable is set to something other than empty, 0, false or no."""
    return os.environ.get(variable, "") not in ("", "0", "false", "no")


def binary(name: str) -> str:
    """The path of a Debian monitoring binary; skip (or fail, when required) if it is missing."""
    path = find_binary(name)
    if path:
        return path
    message = f"{name} is not installed ({INSTALL_HINT})"
    if required("VMHEALTH_REQUIRE_BINARIES"):
        pytest.fail(message)
    pytest.skip(message)
