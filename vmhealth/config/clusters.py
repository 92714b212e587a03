"""`clusters`: the Proxmox clusters to read, one list item each."""

from __future__ import annotations

from dataclasses import dataclass

from .keys import REQUIRED, setting


@dataclass(frozen=True)
class ClusterConfig:
    """One Proxmox cluster: where its API is and how to log in (a token, or a user and password)."""

    name: str = setting("str", REQUIRED, doc="the `cluster` label")
    host: str = setting("str", REQUIRED, doc="host[:port] of any node's API, port 8006 by default")
    token_id: str | None = setting("str", None, doc="API token id, USER@REALM!TOKENID")
    token_secret: str | None = setting("str", None, secret=True, doc="API token secret (UUID)")
    user: str | None = setting("str", None, doc="USER@REALM, with password, when no token is used")
    password: str | None = setting("str", None, secret=True)
    verify_ssl: bool = setting("bool", True, doc="check the API's TLS certificate")
    ca_bundle: str | None = setting("str", None, doc="PEM file of the CA that signed the API's certificate")
    timeout: float = setting("duration", "10s", doc="per Proxmox API call")
