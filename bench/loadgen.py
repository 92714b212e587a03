"""A small HTTP/1.1 load generator: N keep-alive connections, each sending its next request as soon as
the previous answer arrived (closed loop), for a fixed time. One asyncio loop, prebuilt requests, so
that the generator itself costs little CPU next to the server it measures on the same machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    """Requests answered with 2xx, the others, and each answered request's latency in seconds."""

    ok: int = 0
    failed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def build_request(method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _worker(port: int, make: Callable[[int], bytes], first: int, step: int, until: float,
                  result: LoadResult, count: int | None) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = first
    try:
        while time.perf_counter() < until and (count is None or n < count):
            request = make(n)
            n += step
            started = time.perf_counter()
            writer.write(request)
            try:
                status = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                result.failed += 1
                result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                result.ok += 1
            else:
                result.failed += 1
    finally:
        writer.close()


async def _run(port: int, make: Callable[[int], bytes], connections: int, seconds: float,
               count: int | None = None) -> LoadResult:
    result = LoadResult()
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(*(_worker(port, make, i, connections, until, result, count) for i in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


def run_load(port: int, make: Callable[[int], bytes], connections: int, seconds: float,
             count: int | None = None) -> LoadResult:
    """Send `make(n)` (n = 0, 1, 2, ... across connections) for `seconds` over `connections` connections;
    with `count`, stop earlier once n = 0 ... count - 1 are sent."""
    return asyncio.run(_run(port, make, connections, seconds, count))
