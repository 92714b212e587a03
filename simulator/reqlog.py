"""Which API calls were made: counts per path (with and without the query) and the latest requests,
so a test can say "the exporter made exactly two calls per poll"."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any


class RequestLog:
    def __init__(self, keep: int = 2000):
        self._lock = threading.Lock()
        self._paths: Counter[str] = Counter()
        self._queries: Counter[str] = Counter()
        self._statuses: Counter[int] = Counter()
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep)

    def record(self, method: str, path: str, query: str, status: int, user: str | None) -> None:
        key = f"{method} {path}"
        with self._lock:
            self._paths[key] += 1
            self._queries[f"{key}?{query}" if query else key] += 1
            self._statuses[status] += 1
            self._recent.append({"time": time.time(), "method": method, "path": path, "query": query,
                                 "status": status, "user": user})

    def snapshot(self, recent: int = 100) -> dict[str, Any]:
        with self._lock:
            return {
                "total": sum(self._paths.values()), "counts": dict(self._paths),
                "counts_with_query": dict(self._queries),
                "statuses": {str(k): v for k, v in self._statuses.items()},
                "recent": list(self._recent)[-recent:] if recent else [],
            }

    def clear(self) -> None:
        with self._lock:
            self._paths.clear()
            self._queries.clear()
            self._statuses.clear()
            self._recent.clear()
