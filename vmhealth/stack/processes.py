"""What starting real servers on loopback needs besides the processes themselves (`launcher`): a free
port to give one, and a wait for a condition with a deadline instead of a fixed sleep.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
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
