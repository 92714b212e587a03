"""Run a vmhealth WSGI app under gunicorn from the `vmhealth` command.

The app is built in the worker (not the master), so its background threads run where requests are
served; on worker exit the app's `stop` hook runs so that pending state is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gunicorn.app.base import BaseApplication

from vmhealth.config import Config, ExporterConfig, WebhookConfig, load_from_environment
from vmhealth.gunicorn_worker import MAX_BODY_BYTES, MAX_CONNECTIONS_PER_ADDRESS, worker_class
from vmhealth.tls import ReloadingContext, ServerFiles, plain_http_warning, reloading_server_context, server_files

log = logging.getLogger(__name__)


def gunicorn_settings(bind: str, threads: int, log_level: str = "info",
                      max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
                      max_body_bytes: int = MAX_BODY_BYTES, tls: ServerFiles | None = None) -> dict[str, Any]:
    """The settings every vmhealth server uses: one process (state in memory), several threads.

    The limits bound what one client can hold: a request line of 4 KiB, 50 headers of 8 KiB each,
    10 s to send a request or take a reply, `max_connections_per_address` connections and half the
    threads per address (`gunicorn_worker`), 15 s idle on a kept-alive connection; the apps bound
    bodies (exporter.max_body_bytes, 4 MiB for the webhook). With `tls`, HTTPS (`tls_settings`).
    """
    return tls_settings(tls) | {
        "bind": bind,
        "workers": 1,
        "worker_class": worker_class(max_connections_per_address, max_body_bytes),
        "threads": threads,
        "timeout": 60,
        "graceful_timeout": 20,
        "keepalive": 15,
        "limit_request_line": 4094,
        "limit_request_fields": 50,
        "limit_request_field_size": 8190,
        "control_socket_disable": True,  # gunicorn >= 24's control socket: nothing here uses it
        "accesslog": None,
        "errorlog": "-",
        "loglevel": log_level,
    }


def tls_settings(files: ServerFiles | None) -> dict[str, Any]:
    """gunicorn's TLS settings for a section's tls_* keys: `certfile` turns TLS on, and the
    `ssl_context` hook hands out a context that is re-read when the files change (no restart; gunicorn's
    SIGHUP, which restarts the worker, re-reads them too)."""
    if files is None:
        return {}
    import ssl

    reloading: list[ReloadingContext] = []  # built in the worker, on its first connection

    def ssl_context(_config: Any, _default_factory: Any) -> ssl.SSLContext:
        if not reloading:
            reloading.append(reloading_server_context(files))
        return reloading[0].context()

    return {"certfile": files.cert_file, "keyfile": files.key_file, "ca_certs": files.client_ca_file,
            "cert_reqs": ssl.CERT_REQUIRED if files.client_ca_file else ssl.CERT_NONE, "ssl_context": ssl_context}


class _Application(BaseApplication):
    def __init__(self, factory: Callable[[], Any], settings: dict[str, Any], stop: Callable[[Any], None]):
        self.factory, self.settings, self.stop = factory, settings, stop
        self.app: Any = None
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.settings.items():
            if key == "control_socket_disable" and key not in self.cfg.settings:
                continue  # an older gunicorn without a control socket
            self.cfg.set(key, value)
        runner = self

        def worker_exit(_server: Any, _worker: Any) -> None:
            if runner.app is not None:
                runner.stop(runner.app)

        self.cfg.set("worker_exit", worker_exit)

    def load(self) -> Any:
        self.app = self.factory()
        return self.app


def run_gunicorn(factory: Callable[[], Any], settings: dict[str, Any], stop: Callable[[Any], None]) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status."""
    _Application(factory, settings, stop).run()
    return 0


def section_settings(section: ExporterConfig | WebhookConfig, max_body_bytes: int,
                     log_level: str = "info") -> dict[str, Any]:
    """gunicorn's settings for one server's configuration section (`exporter` or `webhook`)."""
    return gunicorn_settings(section.listen, section.threads, log_level, section.max_connections_per_address,
                             max_body_bytes, server_files(section))


@dataclass(frozen=True)
class Served:
    """A server under gunicorn, started by `vmhealth <component>` or by its gunicorn.conf.py: what
    differs between the exporter and the webhook."""

    component: str  # the program, and the name of its configuration section
    build: Callable[[Config], Any]  # the WSGI app for a configuration
    stop: Callable[[Any], None]  # the app's shutdown on worker exit: pending state written, threads ended
    max_body_bytes: Callable[[Any], int]  # the largest request body, from the section

    def serve(self, config: Config) -> int:
        """Serve the app on the section's listen address until SIGINT/SIGTERM; returns the exit status."""
        section = getattr(config, self.component)
        level = logging.getLevelName(logging.getLogger().level).lower()
        settings = section_settings(section, self.max_body_bytes(section), level)
        log.info("%s listening on %s%s", self.component, "https://" if section.tls_cert_file else "http://",
                 section.listen)
        warning = plain_http_warning(self.component, section)
        if warning:
            log.warning(warning)
        return run_gunicorn(lambda: self.build(config), settings, self.stop)

    def gunicorn_conf(self) -> dict[str, Any]:
        """The settings of `<component>/gunicorn.conf.py`: the configuration that `load_from_environment`
        finds, used as `vmhealth <component>` uses it."""
        section = getattr(load_from_environment(self.component), self.component)

        def worker_exit(_server: Any, worker: Any) -> None:
            app = getattr(worker, "wsgi", None)
            if app is not None:
                self.stop(app)

        return section_settings(section, self.max_body_bytes(section)) | {"worker_exit": worker_exit}
