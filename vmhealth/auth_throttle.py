"""Slowing down credential guessing from one address, without ever delaying the right credential.

The caller checks the credential first. Only a failure is passed here: `failure(address)` counts it
and says what to do with this refusal — answer at once, answer after `delay` seconds, or answer 429
with `retry_after` (no sleep, so a guesser holds no thread). A request with the right credential
never reaches this module, so an operator who shares an address (a NAT) with a guesser is let in.

Failures leak away at `refill_per_second` (a leaky bucket): `free_failures` are answered at once,
the next ones wait 0.1 s, 0.2 s, 0.4 s … up to `max_delay`, and past `refuse_after` they get 429
until the bucket has drained below it. State is per address, in process, and bounded: at most
`max_addresses` are kept, the least recently failed forgotten first, so many addresses cannot grow it.

    throttle = AuthThrottle()                       # or for_limit(config's auth_failures_per_minute)
    if not credential_ok:
        retry_after = penalize(throttle, "POST /ui/login", request.remote_addr)  # sleeps the delay
        if retry_after:
            return 429, {"Retry-After": str(retry_after)}
        return 401
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from vmhealth.process_counters import AUTH_THROTTLED


@dataclass(frozen=True)
class Penalty:
    """What to do with one refused request: sleep `delay` seconds, or answer 429 with `retry_after`."""

    delay: float = 0.0
    retry_after: int | None = None

    @property
    def result(self) -> str:
        """The counter label: `refused` (429), `delayed`, or `none`."""
        return "refused" if self.retry_after else "delayed" if self.delay else "none"


class AuthThrottle:
    """Failed authentications per client address, leaking away over time; thread-safe."""

    def __init__(self, free_failures: int = 5, refuse_after: int = 20, refill_per_second: float = 20 / 60,
                 base_delay: float = 0.1, max_delay: float = 1.0, max_addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        if not 0 <= free_failures < refuse_after or refill_per_second <= 0 or max_addresses < 1:
            raise ValueError("need 0 <= free_failures < refuse_after, refill_per_second > 0, max_addresses >= 1")
        self.free, self.refuse_after, self.rate = free_failures, refuse_after, refill_per_second
        self.base_delay, self.max_delay, self.max_addresses = base_delay, max_delay, max_addresses
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (level, at)

    def failure(self, address: str | None) -> Penalty:
        """Count one failed authentication from `address`; the penalty for this refusal."""
        key = address or "?"
        now = self.clock()
        with self._lock:
            level = self._level(key, now)
            if level >= self.refuse_after:  # refused requests do not fill the bucket further
                self._buckets[key] = (level, now)
                self._buckets.move_to_end(key)
                return Penalty(retry_after=max(1, math.ceil((level - self.refuse_after + 1) / self.rate)))
            level += 1
            self._buckets[key] = (level, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)
        over = level - self.free
        if over <= 0:
            return Penalty()
        return Penalty(delay=min(self.max_delay, self.base_delay * 2 ** (over - 1)))

    def _level(self, key: str, now: float) -> float:
        level, at = self._buckets.get(key, (0.0, now))
        return max(0.0, level - (now - at) * self.rate)

    def failures(self, address: str | None) -> float:
        """The address's current (leaked) count of failures, for tests and diagnostics."""
        with self._lock:
            return self._level(address or "?", self.clock())

    def __len__(self) -> int:
        return len(self._buckets)


def for_limit(per_minute: int) -> AuthThrottle | None:
    """The throttle of a server whose `auth_failures_per_minute` is `per_minute` (0: none): the first
    quarter of them answered at once, then growing delays, then 429 until the rate falls below it."""
    if per_minute <= 0:
        return None
    return AuthThrottle(free_failures=max(1, per_minute // 4), refuse_after=max(2, per_minute),
                        refill_per_second=per_minute / 60)


def penalize(throttle: AuthThrottle | None, route: str, address: str | None,
             sleep: Callable[[float], None] = time.sleep) -> int | None:
    """After a failed authentication on `route` from `address`: count its penalty, wait its delay here,
    and return the Retry-After seconds of a 429 to answer instead, or None to answer the usual 401."""
    if throttle is None:
        return None
    penalty = throttle.failure(address)
    if penalty.result != "none":
        AUTH_THROTTLED.count(route, penalty.result)
    if penalty.delay:
        sleep(penalty.delay)
    return penalty.retry_after
