"""What starting real servers on loopback needs besides the processes themselves (`launcher`): a free
port to give one, and a wait for a condition with a deadline instead of a fixed sleep.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import time
from collections.abc import Callable
from contextlib import suppress
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    The kernel picks it, unless $FREE_PORT_RANGE names a range (`20000-20499`, below the kernel's
    ephemeral ports): then the next one of that range that binds, so that processes given disjoint
    ranges, such as parallel test workers, never pick each other's ports. (No VMHEALTH_ prefix: the
    configuration reads every VMHEALTH_* variable as a key.)"""
    span = os.environ.get("FREE_PORT_RANGE")
    if not span:
        return _bind_port(0)
    first, last = (int(end) for end in span.split("-"))
    for _ in range(last - first + 1):
        port = first + next(_cursor) % (last - first + 1)
        with suppress(OSError):
            return _bind_port(port)
    raise OSError(f"no free port in FREE_PORT_RANGE={span}")


# where this process goes on in its range: a random start, so that a child drawing from its parent's
# range is unlikely to pick what the parent picked moments before
_cursor = itertools.count(random.randrange(1 << 16))


def _bind_port(port: int) -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], T], seconds: float, what: str, interval: float = 0.2) -> T:
    """The first truthy result of `condition()`; TimeoutError naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up waiting for {what} after {seconds:g}s")
        time.sleep(interval)
