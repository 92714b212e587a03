"""Who is calling and what they may do: API tokens, ticket logins with CSRF tokens, privileges.

Privileges are per identity for the whole cluster (no per-path ACLs): enough to show a
least-privilege token being refused with the real "Permission check failed (...)" error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from urllib.parse import unquote

from .model import ApiError

ROLES: dict[str, frozenset[str]] = {
    # everything vmhealth or prometheus-pve-exporter could need
    "full": frozenset({"Sys.Audit", "Sys.Modify", "Datastore.Audit", "VM.Audit", "VM.PowerMgmt", "VM.Monitor",
                       "VM.GuestAgent.Audit", "VM.GuestAgent.Unrestricted", "VM.Config.Options"}),
    # exactly the roles docs/security.md creates with pveum (tests/deploy/test_pve_privileges.py checks):
    # VMHealthAuditor, read only, for the exporter
    "audit": frozenset({"Sys.Audit", "VM.Audit"}),
    # VMHealthRemediator, for the webhook: VM.GuestAgent.Audit for its agent/ping before a reset (PVE 9)
    "power": frozenset({"Sys.Audit", "VM.Audit", "VM.PowerMgmt", "VM.GuestAgent.Audit"}),
    # the webhook's role without the guest-agent privilege: its agent/ping gets the 403
    "power-noagent": frozenset({"Sys.Audit", "VM.Audit", "VM.PowerMgmt"}),
}
TICKET_LIFETIME = 7200


class Unauthorized(Exception):
    """A 401: sent with an empty body, the reason only in the status line."""


@dataclass(frozen=True)
class Caller:
    """Who sent an API request, and what they may do."""

    userid: str  # user@realm, or user@realm!tokenid for a token
    privileges: frozenset[str]
    ticket: bool = False


class Auth:
    def __init__(self) -> None:
        self.tokens: dict[str, tuple[str, frozenset[str]]] = {}
        self.users: dict[str, tuple[str, frozenset[str]]] = {}
        self.power_revoked = False
        self.audit_revoked = False  # the token's ACL was removed: reads see nothing, /cluster/status is 403
        self._key = os.urandom(32)

    def add_token(self, token_id: str, secret: str, role: str = "full") -> None:
        user, bang, name = token_id.partition("!")
        if not bang or "@" not in user or not name:
            raise ValueError(f"token id {token_id!r} is not USER@REALM!TOKENID")
        if not secret:
            raise ValueError(f"token {token_id!r} needs a secret")
        self.tokens[token_id] = (secret, ROLES[role])

    def add_user(self, userid: str, password: str, role: str = "full") -> None:
        if "@" not in userid or "!" in userid:
            raise ValueError(f"user {userid!r} is not USER@REALM")
        self.users[userid] = (password, ROLES[role])

    def privileges(self, granted: frozenset[str]) -> frozenset[str]:
        revoked = {"VM.PowerMgmt"} if self.power_revoked else set()
        if self.audit_revoked:
            revoked |= {"Sys.Audit", "VM.Audit", "Datastore.Audit"}
        return granted - revoked

    # -- tickets --------------------------------------------------------------------------------
    def _sign(self, text: str) -> str:
        return base64.b64encode(hmac.new(self._key, text.encode(), hashlib.sha256).digest()).decode()

    def _ticket(self, userid: str, now: int) -> str:
        plain = f"PVE:{userid}:{now:08X}"
        return f"{plain}::{self._sign(plain)}"

    def _csrf(self, userid: str, now: int) -> str:
        return f"{now:08X}:{self._sign(f'{now:08X}:{userid}')}"

    def _check_ticket(self, ticket: str) -> str | None:
        """The user id of a valid, unexpired ticket."""
        plain, sep, signature = ticket.partition("::")
        parts = plain.split(":")
        if not sep or len(parts) != 3 or parts[0] != "PVE":
            return None
        if not hmac.compare_digest(self._sign(plain), signature):
            return None
        try:
            issued = int(parts[2], 16)
        except ValueError:
            return None
        if not -300 < time.time() - issued < TICKET_LIFETIME:
            return None
        return unquote(parts[1])

    def login(self, username: str, password: str, realm: str | None = None) -> dict[str, object]:
        """POST /access/ticket: a new ticket for a password, or a renewed one for a valid ticket."""
        if realm and "@" not in username:
            username = f"{username}@{realm}"
        account = self.users.get(username)
        renewed = self._check_ticket(password) if password.startswith("PVE:") else None
        if account is None or not (hmac.compare_digest(account[0], password) or renewed == username):
            raise ApiError(401, "authentication failure")
        now = int(time.time())
        caps = {"vms": {p: 1 for p in self.privileges(account[1]) if p.startswith("VM.")}}
        return {"username": username, "ticket": self._ticket(username, now),
                "CSRFPreventionToken": self._csrf(username, now), "cap": caps}

    # -- every request --------------------------------------------------------------------------
    def authenticate(self, authorization: str | None, cookie: str | None, csrf: str | None, method: str) -> Caller:
        """The caller, or Unauthorized with the reason pveproxy puts in the status line."""
        if authorization and authorization.startswith("PVEAPIToken"):
            value = unquote(authorization[len("PVEAPIToken"):].lstrip("= ").split(";")[0])
            token_id, sep, secret = value.rpartition("=")
            entry = self.tokens.get(token_id) if sep else None
            if entry is None or not hmac.compare_digest(entry[0], secret):
                raise Unauthorized("Authentication failed!")
            return Caller(token_id, self.privileges(entry[1]))
        ticket = None
        if authorization and authorization.startswith("PVEAuthCookie="):
            ticket = authorization.split("=", 1)[1]
        elif cookie:
            for part in cookie.split(";"):
                name, _, value = part.strip().partition("=")
                if name == "PVEAuthCookie":
                    ticket = unquote(value)
        if not ticket:
            raise Unauthorized("No ticket")
        userid = self._check_ticket(ticket)
        if userid is None or userid not in self.users:
            raise Unauthorized("Authentication failed!")
        if method not in ("GET", "HEAD"):
            issued = (csrf or "").split(":")[0]
            try:
                expected = self._csrf(userid, int(issued, 16))
            except ValueError:
                expected = None
            if expected is None or not hmac.compare_digest(expected, csrf or ""):
                raise Unauthorized("Permission denied - invalid csrf token")
        return Caller(userid, self.privileges(self.users[userid][1]), ticket=True)


def require(identity: Caller, path: str, *any_of: str) -> None:
    """Raise the real 403 unless the caller holds one of the privileges on `path`."""
    if not any(p in identity.privileges for p in any_of):
        raise ApiError(403, f"Permission check failed ({path}, {'|'.join(any_of)})")
