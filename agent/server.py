"""Pull mode: `/metrics`, collected fresh on each scrape as node_exporter does."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .exposition import CONTENT_TYPE
from .wire import PageServer

_LANDING = (b"<html><head><title>vmhealth agent</title></head><body><h1>vmhealth agent</h1>"
            b'<p><a href="/metrics">Metrics</a></p></body></html>\n')


class MetricsServer(PageServer):
    """Serves `page()` at /metrics; one scrape at a time collects (a lock), so scrapes cannot pile up."""

    def __init__(self, host: str, port: int, page: Callable[[], str], tls: Any = None) -> None:
        self.page = page
        self.lock = threading.Lock()
        super().__init__(host, port, {"/metrics": self._metrics, "/": self._landing}, tls)

    def _metrics(self) -> tuple[int, str, bytes]:
        with self.lock:
            return 200, CONTENT_TYPE, self.page().encode("utf-8")

    def _landing(self) -> tuple[int, str, bytes]:
        return 200, "text/html; charset=utf-8", _LANDING
