"""TLS for vmhealth's listeners and the agent's client: contexts built from files, and re-read when
the files change, so certificates rotate without a restart.

Standard library only: the agent imports this inside guests (and only when TLS is configured).
The keys mirror exporter-toolkit's `tls_server_config` (cert_file, key_file, client_ca_file,
min_version), set per component in the one configuration file.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmhealth.config import AgentConfig, ExporterConfig, WebhookConfig

    ServingSection = ExporterConfig | WebhookConfig | AgentConfig

log = logging.getLogger(__name__)
MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class ServerFiles:
    """One listener's TLS settings (a section's tls_* keys)."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    min_version: str = "1.2"

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p for p in (self.cert_file, self.key_file, self.client_ca_file) if p)


def server_files(section: ServingSection) -> ServerFiles | None:
    """The section's TLS settings, or None when it serves plain HTTP."""
    if not getattr(section, "tls_cert_file", None):
        return None
    return ServerFiles(section.tls_cert_file, section.tls_key_file, section.tls_client_ca_file,
                       section.tls_min_version or "1.2")


def plain_http_warning(component: str, section: ServingSection) -> str | None:
    """What to warn about when a server listens beyond loopback without TLS: the credentials sent to
    it cross the network in the clear."""
    host = str(section.listen).rpartition(":")[0].strip("[]")
    if getattr(section, "tls_cert_file", None) or host in ("127.0.0.1", "::1", "localhost") \
            or host.startswith("127."):
        return None
    return (f"{component} listens on {section.listen} over plain HTTP: the keys and tokens sent to it cross the "
            f"network in the clear; set {component}.tls_cert_file and tls_key_file (docs/security.md, Channels)")


def server_context(files: ServerFiles) -> ssl.SSLContext:
    """A server context: the cert chain, TLS >= min_version, and client certificates required and
    verified against client_ca_file when it is set (mutual TLS)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_VERSIONS[files.min_version]
    context.load_cert_chain(files.cert_file, files.key_file)
    if files.client_ca_file:
        context.load_verify_locations(cafile=files.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def reloading_server_context(files: ServerFiles) -> ReloadingContext:
    """The listener's context, re-read when its files change."""
    return ReloadingContext(lambda: server_context(files), files.paths)


def client_context(ca_bundle: str | None, verify: bool = True, cert_file: str | None = None,
                   key_file: str | None = None) -> ssl.SSLContext:
    """A client context verifying the server (against `ca_bundle` when given), presenting a client
    certificate when `cert_file` is set."""
    context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def _signature(paths: tuple[str, ...]) -> tuple[Any, ...]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


class ReloadingContext:
    """The current context built by `build` from `paths`; rebuilt when a file's inode, size or mtime
    changes (checked at most once a second). A rebuild that fails (a cert written before its key)
    keeps the last good context and is logged once per change."""

    check_seconds = 1.0

    def __init__(self, build: Callable[[], ssl.SSLContext], paths: tuple[str, ...]) -> None:
        self.build, self.paths = build, paths
        self._lock = threading.Lock()
        self._signature = _signature(paths)
        self._context = build()
        self._checked = time.monotonic()

    def context(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked < self.check_seconds:
            return self._context
        with self._lock:
            self._checked = now
            signature = _signature(self.paths)
            if signature != self._signature:
                self._signature = signature
                try:
                    self._context = self.build()
                    log.info("TLS: re-read %s", ", ".join(self.paths))
                except (OSError, ValueError) as exc:
                    log.warning("TLS: cannot re-read %s (%s); still using the previous certificate",
                                ", ".join(self.paths), exc)
        return self._context


_PEER_DISTRUSTS = ("ALERT_BAD_CERTIFICATE", "ALERT_UNKNOWN_CA", "ALERT_CERTIFICATE_UNKNOWN")


def handshake_failure(exc: BaseException) -> str:
    """Why a handshake failed, in one phrase: OpenSSL's reason (`tlsv1 alert unknown ca`: the client
    does not trust our certificate; `peer did not return a certificate`; `certificate verify failed:
    certificate has expired`), else the error's text."""
    verify = getattr(exc, "verify_message", None)
    if verify:
        return f"certificate verify failed: {verify}"
    reason = str(getattr(exc, "reason", None) or "")
    if not reason:
        return str(exc) or exc.__class__.__name__
    text = reason.replace("_", " ").lower()
    if reason.endswith(_PEER_DISTRUSTS):  # an alert the peer sent: it did not accept our certificate
        return f"the peer does not trust this certificate ({text}): does it verify with the right CA?"
    return text


def file_problems(cert_file: str | None, key_file: str | None, ca_file: str | None = None,
                  now: float | None = None) -> list[tuple[str, str]]:
    """What is wrong with a certificate, its key and a CA file, as (which, message) pairs: `cert`,
    `key` or `ca` for a file that is missing or unreadable, `cert` for an expired or not yet valid
    certificate or one its key does not match."""
    problems = [(which, f"cannot read {path}: {why}")
                for which, path in (("cert", cert_file), ("key", key_file), ("ca", ca_file))
                if path and (why := _why(path))]
    if problems or not cert_file:
        return problems
    try:
        decoded = ssl._ssl._test_decode_cert(cert_file)  # type: ignore[attr-defined]  # the stdlib's only PEM reader
    except (ssl.SSLError, ValueError) as exc:
        return [("cert", f"{cert_file} is not a PEM certificate ({exc})")]
    now = time.time() if now is None else now
    if ssl.cert_time_to_seconds(decoded["notAfter"]) < now:
        problems.append(("cert", f"{cert_file} expired on {decoded['notAfter']}"))
    elif ssl.cert_time_to_seconds(decoded["notBefore"]) > now:
        problems.append(("cert", f"{cert_file} is not valid before {decoded['notBefore']}"))
    if key_file:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            what = "does not match" if "MISMATCH" in str(exc).upper() else f"cannot be used with ({exc.reason})"
            problems.append(("key", f"{key_file} {what} the certificate {cert_file}"))
    if ca_file:
        try:
            ssl.create_default_context(cafile=ca_file)
        except ssl.SSLError as exc:
            problems.append(("ca", f"{ca_file} holds no usable PEM certificate ({exc.reason})"))
    return problems


def _why(path: str) -> str:
    """'' when the file can be read, else why not."""
    try:
        with open(path, "rb"):
            return ""
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        return getattr(exc, "strerror", None) or str(exc)
