"""Checks that read more than one key: clusters' logins, secrets that must differ, TLS files, and
the keys each program needs."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from .problems import Problems
from .root import COMPONENT_REQUIREMENTS, Config
from .secret_files import warn_if_others_read

MIN_SECRET_LENGTH = 16


def check(config: Config, components: Iterable[str], problems: Problems) -> None:
    """Record the problems that show only across keys (each key alone was checked as it was read)."""
    _check_clusters(config, problems)
    _check_thresholds(config, problems)
    _check_secrets(config, problems)
    _check_retention(config, problems)
    _check_policy(config, problems)
    _check_tls(config, problems)
    _check_poll_offset(config, problems)
    for component in components:
        _check_required(config, component, problems)



def _check_secrets(config: Config, problems: Problems) -> None:
    """Keys and tokens long enough not to be guessed, and Alertmanager's token no admin token."""
    for path in ("exporter.api_key", "exporter.read_token", "agent.api_key", "webhook.token", "webhook.admin_token",
                 "webhook.viewer_token", "webhook.metrics_token"):
        section, key = path.split(".")
        value = getattr(getattr(config, section), key)
        if isinstance(value, str) and len(value) < MIN_SECRET_LENGTH:
            problems.add(path, f"shorter than {MIN_SECRET_LENGTH} characters; use a random one "
                         "(`openssl rand -hex 32`)")
    token, admin = config.webhook.token, config.webhook.admin_token
    if isinstance(token, str) and isinstance(admin, str) and token == admin:
        problems.add("webhook.admin_token", "is the same as webhook.token: Alertmanager's token would then "
                     "force resets and end quarantines; give each its own secret")
    viewer = config.webhook.viewer_token
    if isinstance(viewer, str) and viewer in (token, admin):
        same = "webhook.admin_token" if viewer == admin else "webhook.token"
        problems.add("webhook.viewer_token", f"is the same as {same}: a viewer could then act; give each its "
                     "own secret")
    metrics = config.webhook.metrics_token
    if isinstance(metrics, str) and metrics in (token, admin):
        same = "webhook.admin_token" if metrics == admin else "webhook.token"
        problems.add("webhook.metrics_token", f"is the same as {same}: Prometheus could then act; give each its "
                     "own secret")
    read = config.exporter.read_token
    if isinstance(read, str) and read == config.exporter.api_key:
        problems.add("exporter.read_token", "is the same as exporter.api_key: a guest holding the shared key "
                     "could then read the whole fleet; give each its own secret")


def _check_retention(config: Config, problems: Problems) -> None:
    retention = config.webhook.history_retention
    if isinstance(retention, float) and retention < 86400:
        problems.add("webhook.history_retention", "at least 1d: the rate limit and the cooldowns read the last "
                     "day of decisions")


_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_TOKEN_ID = re.compile(r"^[^@!\s]+@[^@!\s]+![A-Za-z][A-Za-z0-9.\-_]*$")


def _check_clusters(config: Config, problems: Problems) -> None:
    seen: set[str] = set()
    for i, cluster in enumerate(config.clusters):
        here = f"clusters[{i}]"
        if cluster.name is not None:
            if not _CLUSTER_NAME.fullmatch(cluster.name):  # fullmatch: "$" would let "lab\n" through
                problems.add(f"{here}.name", "use letters, digits, '.', '-' and '_' only")
            if cluster.name in seen:
                problems.add(f"{here}.name", f"{cluster.name!r} is used by another cluster")
            seen.add(cluster.name)
        if cluster.token_id or cluster.token_secret:
            if not cluster.token_id:
                problems.add(f"{here}.token_id", "missing (token_secret is set)")
            elif not _TOKEN_ID.match(cluster.token_id):
                problems.add(f"{here}.token_id", f"{cluster.token_id!r} is not USER@REALM!TOKENID")
            if not cluster.token_secret:
                problems.add(f"{here}.token_secret", "missing")
            if cluster.user or cluster.password:
                problems.add(here, "set either token_id + token_secret or user + password, not both")
        elif cluster.user or cluster.password:
            if not cluster.user:
                problems.add(f"{here}.user", "missing (password is set)")
            if not cluster.password:
                problems.add(f"{here}.password", "missing")
        else:
            problems.add(f"{here}.token_secret", "missing (give token_id + token_secret, or user + password)")
        if cluster.ca_bundle and not Path(cluster.ca_bundle).is_file():
            problems.add(f"{here}.ca_bundle", f"no such file: {cluster.ca_bundle}")


def _check_thresholds(config: Config, problems: Problems) -> None:
    if config.thresholds.io_window is not None and config.thresholds.io_window <= 0:
        problems.add("thresholds.io_window", "must be longer than 0s")


def _check_poll_offset(config: Config, problems: Problems) -> None:
    offset, interval = config.exporter.poll_offset, config.exporter.poll_interval
    if offset is not None and interval is not None and not 0 <= offset < interval:
        problems.add("exporter.poll_offset", f"must be from 0s to below exporter.poll_interval ({interval:g}s)")


def _check_policy(config: Config, problems: Problems) -> None:
    expiry = config.webhook.policy.incident_expiry
    if expiry is not None and expiry <= 0:
        problems.add("webhook.policy.incident_expiry", "must be longer than 0s")


def _check_tls(config: Config, problems: Problems) -> None:
    """TLS files that can be read, match and are in date; TLS keys only where they can be used."""
    agent = config.agent
    if agent.mode == "push":
        for key in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            if getattr(agent, key):
                problems.add(f"agent.{key}", "the agent serves nothing with mode: push; set mode: pull or both, "
                             "or use client_cert_file for a client certificate")
    urls = [str(url) for url in (agent.exporter_urls or [agent.exporter_url])]
    if agent.mode != "pull" and not any(url.lower().startswith("https:") for url in urls):
        for key in ("ca_bundle", "client_cert_file", "client_key_file"):
            if getattr(agent, key):
                problems.add(f"agent.{key}", f"no exporter of agent.exporter_urls is https:// ({', '.join(urls)})")
    checks = [(s, "tls_cert_file", "tls_key_file", "tls_client_ca_file") for s in ("exporter", "webhook", "agent")]
    checks += [(s, "client_cert_file", "client_key_file", "ca_bundle") for s in ("webhook", "agent")]
    for section, cert_key, key_key, ca_key in checks:
        node = getattr(config, section)
        cert, key, ca = getattr(node, cert_key), getattr(node, key_key), getattr(node, ca_key)
        if not (cert or key or ca):
            continue
        if (not cert or not key) and (cert or key or ca_key != "ca_bundle"):
            missing = key_key if cert else cert_key
            present = cert_key if cert else key_key if key else ca_key
            problems.add(f"{section}.{missing}", f"missing ({present} is set)")
            continue
        from vmhealth.tls import file_problems

        where = {"cert": cert_key, "key": key_key, "ca": ca_key}
        found = file_problems(cert, key, ca)
        for which, message in found:
            problems.add(f"{section}.{where[which]}", message)
        if key and not found:
            warn_if_others_read(f"{section}.{key_key}", key)


def _check_required(config: Config, component: str, problems: Problems) -> None:
    for required in COMPONENT_REQUIREMENTS.get(component, ()):
        if required == "clusters":
            if not config.clusters:
                problems.add("clusters", f"missing: the {component} needs at least one Proxmox cluster")
            continue
        section, key = required.split(".")
        if getattr(getattr(config, section), key) is None:
            path = f"{required}"
            if not any(p.startswith(path + ":") for p in problems.lines):
                problems.add(path, "missing")
