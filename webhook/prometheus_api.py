"""Reads from Prometheus' HTTP API (`webhook.prometheus_url`): instant and range queries.

The webhook asks Prometheus for what the rules already computed (the recording rules' series and
`ALERTS`) instead of keeping guest state of its own; a failure is an exception naming the query, for
the caller to show or log, never a silent empty answer.
"""

from __future__ import annotations

from typing import Any

import requests

TIMEOUT_SECONDS = 5.0


class PrometheusError(Exception):
    """Prometheus could not answer a query."""


class PrometheusAPI:
    def __init__(self, url: str, timeout: float = TIMEOUT_SECONDS):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def instant(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant query: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        return self._get("query", {"query": expr})

    def range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """The result matrix of a range query: [{"metric": {...}, "values": [[t, "v"], ...]}, ...]."""
        return self._get("query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                         "step": f"{step:g}"})

    def _get(self, endpoint: str, params: dict[str, str]) -> list[dict[str, Any]]:
        try:
            reply = self.session.get(f"{self.url}/api/v1/{endpoint}", params=params, timeout=self.timeout)
            reply.raise_for_status()
            result = reply.json()["data"]["result"]
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            raise PrometheusError(f"{params['query'][:80]}: {type(exc).__name__}: {exc}"[:300]) from exc
        if not isinstance(result, list):
            raise PrometheusError(f"{params['query'][:80]}: expected a vector or matrix")
        return result
