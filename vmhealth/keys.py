"""Per-VM agent keys: derived from the shared key so that no key list has to be stored.

A guest given only its own key can report for itself and for no other guest.
"""

from __future__ import annotations

import hashlib
import hmac


def derive_vm_key(api_key: str, cluster: str, vmid: int) -> str:
    """The key of guest `vmid` in `cluster`: hex HMAC-SHA256(api_key, "cluster:vmid")."""
    return hmac.new(api_key.encode(), f"{cluster}:{int(vmid)}".encode(), hashlib.sha256).hexdigest()


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented secret with the expected one."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())
