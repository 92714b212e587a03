"""The HTTP client behind `vmhealth reset`, `release`, `close-incident` and `history`: they talk to a running webhook,
so the same policy, the same database and the same history apply whoever asks."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from vmhealth.config import Config, split_listen


def add_url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", metavar="URL",
                        help="the webhook's address (default: webhook.listen, https:// with webhook.tls_cert_file)")
    parser.add_argument("--ca-file", metavar="PEM", help="verify an https webhook with this CA (default: the system's)")
    parser.add_argument("--cert", metavar="PEM", help="client certificate, for a webhook with tls_client_ca_file")
    parser.add_argument("--key", metavar="PEM", help="its private key")
    parser.add_argument("--cluster", help="the guest's cluster, when several are configured")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the answer (default 180)")


def base_url(config: Config, url: str | None) -> str:
    if url:
        return url.rstrip("/")
    host, port = split_listen(config.webhook.listen)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    scheme = "https" if config.webhook.tls_cert_file else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def tls_options(args: argparse.Namespace) -> dict[str, Any]:
    """requests' `verify` and `cert` from --ca-file, --cert and --key."""
    options: dict[str, Any] = {}
    if getattr(args, "ca_file", None):
        options["verify"] = args.ca_file
    if getattr(args, "cert", None):
        options["cert"] = (args.cert, args.key) if args.key else args.cert
    return options


def reader_token(config: Config) -> str | None:
    """The token to read with: the viewer's where there is one (reading needs no power to act), else the admin's."""
    return config.webhook.viewer_token or config.webhook.admin_token


def call(method: str, url: str, token: str | None, timeout: float, **kwargs: Any) -> tuple[int, Any]:
    """(status, JSON body); exits 1 with one line when the webhook cannot be reached."""
    import requests

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.request(method, url, headers=headers, timeout=timeout, **kwargs)
    except requests.RequestException as exc:
        print(f"vmhealth: cannot reach the webhook at {url}: {exc.__class__.__name__}", file=sys.stderr)
        raise SystemExit(1) from None
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text.strip()[:200]}
    return response.status_code, body


def print_json(body: Any) -> None:
    print(json.dumps(body, indent=2))


def admin_post(args: argparse.Namespace, vmid: int, route: str, needed_for: str,
               body: dict[str, Any]) -> tuple[int, Any]:
    """POST /api/vms/<vmid>/<route> with the admin token of --config; exits 2 when there is none."""
    from vmhealth.subcommand import load_config_or_exit

    config = load_config_or_exit(args, ())
    if not config.webhook.admin_token:
        print(f"vmhealth: webhook.admin_token: missing (needed to {needed_for})")
        raise SystemExit(2)
    params = {"cluster": args.cluster} if args.cluster else {}
    return call("POST", f"{base_url(config, args.url)}/api/vms/{vmid}/{route}", config.webhook.admin_token,
                args.timeout, params=params, json=body, **tls_options(args))


def ask_admin(args: argparse.Namespace, route: str, needed_for: str, body: dict[str, Any], refused: str,
              done: Callable[[Any], str] = lambda reply: str(reply.get("message"))) -> int:
    """POST the guest's (`args.vmid`) `route` with the admin token: print `done(reply)` and return 0 on
    success, else print why it was `refused` and return 1."""
    status, reply = admin_post(args, args.vmid, route, needed_for, body)
    if reply.get("success"):
        print(done(reply))
        return 0
    print(f"vmhealth: {refused} (HTTP {status}): {reply.get('error')}")
    return 1
