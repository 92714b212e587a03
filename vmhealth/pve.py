"""The Proxmox VE API client every server uses: proxmoxer with vmhealth's settings and errors.

One `PveClient` per cluster, kept for the life of the process (a ticket login is renewed by
proxmoxer); each call has the cluster's timeout. Errors become `PveError` with the HTTP status when
there is one, so callers can tell "Proxmox said no" from "Proxmox did not answer".
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from vmhealth.config import ClusterConfig

log = logging.getLogger(__name__)


class PveError(Exception):
    """A failed Proxmox call. `status` is the HTTP status, or None when no answer came back."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def unknown_outcome(self) -> bool:
        """True when a POST may or may not have been carried out (no answer, or a 5xx)."""
        return self.status is None or self.status >= 500


class PveClient:
    """Calls to one cluster's API by path, e.g. `get("cluster/resources", type="vm")`."""

    def __init__(self, cluster: ClusterConfig):
        self.cluster = cluster
        self.name: str = cluster.name
        self._api: Any = None

    def _connect(self) -> Any:
        from proxmoxer import ProxmoxAPI

        verify: bool | str = self.cluster.verify_ssl
        if verify and self.cluster.ca_bundle:
            verify = self.cluster.ca_bundle
        kwargs: dict[str, Any] = {"verify_ssl": verify, "timeout": self.cluster.timeout}
        if self.cluster.token_id:
            user, _, token_name = self.cluster.token_id.partition("!")
            kwargs.update(user=user, token_name=token_name, token_value=self.cluster.token_secret)
        else:
            kwargs.update(user=self.cluster.user, password=self.cluster.password)
        return ProxmoxAPI(self.cluster.host, backend="https", service="PVE", **kwargs)

    @property
    def api(self) -> Any:
        if self._api is None:
            try:
                self._api = self._connect()
            except Exception as exc:  # login with user + password talks to the API already
                raise _as_pve_error(exc, "login") from exc
        return self._api

    def get(self, path: str, **params: Any) -> Any:
        """The `data` of GET /api2/json/<path>."""
        return self._call("get", path, params)

    def post(self, path: str, **data: Any) -> Any:
        """The `data` of POST /api2/json/<path> (a UPID for the status/* actions)."""
        return self._call("post", path, data)

    def _call(self, method: str, path: str, params: dict[str, Any]) -> Any:
        try:
            return getattr(self.api(path), method)(**params)
        except PveError:
            raise
        except Exception as exc:
            if _status_of(exc) == 401 and not self.cluster.token_id:
                self._api = None  # an expired ticket: log in again on the next call
            raise _as_pve_error(exc, f"{method.upper()} {path}") from exc

    # The calls vmhealth makes, named.
    def guests(self) -> list[dict[str, Any]]:
        """QEMU and LXC guests of the whole cluster, templates included (callers filter)."""
        return [r for r in self.get("cluster/resources", type="vm") if r.get("type") in ("qemu", "lxc")]

    def cluster_status(self) -> list[dict[str, Any]]:
        return self.get("cluster/status")

    def guest_status(self, node: str, kind: str, vmid: int) -> dict[str, Any]:
        return self.get(f"nodes/{node}/{kind}/{vmid}/status/current")

    def guest_config(self, node: str, kind: str, vmid: int) -> dict[str, Any]:
        return self.get(f"nodes/{node}/{kind}/{vmid}/config")

    def guest_action(self, node: str, kind: str, vmid: int, action: str) -> str:
        """POST status/<action>; the UPID of the task Proxmox started."""
        return self.post(f"nodes/{node}/{kind}/{vmid}/status/{action}")

    def task_status(self, node: str, upid: str) -> dict[str, Any]:
        return self.get(f"nodes/{node}/tasks/{quote(upid, safe='')}/status")

    def tasks(self, node: str, **params: Any) -> list[dict[str, Any]]:
        return self.get(f"nodes/{node}/tasks", **params)

    def agent_ping(self, node: str, vmid: int) -> Any:
        """POST agent/ping of a QEMU guest: returns when its guest agent answered, else PveError.

        Proxmox itself gives the agent 3 s (500 `QEMU guest agent is not running`); the call is
        bounded by the cluster's `timeout` like every other. Needs VM.GuestAgent.Audit (PVE 9) or
        VM.Monitor (PVE 8) on the guest: 403 without."""
        return self.post(f"nodes/{node}/qemu/{vmid}/agent/ping")


def is_timeout(exc: PveError) -> bool:
    """True when the call failed because Proxmox did not answer within the timeout."""
    import requests

    if isinstance(exc.__cause__, requests.exceptions.Timeout):
        return True
    return exc.status is None and "timed out" in str(exc).lower()  # e.g. ConnectionError(ReadTimeoutError)


def _status_of(exc: Exception) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    return int(status) if isinstance(status, int) else None


def _as_pve_error(exc: Exception, what: str) -> PveError:
    status = _status_of(exc)
    detail = getattr(exc, "content", None) or getattr(exc, "status_message", None) or str(exc)
    text = str(detail).strip() or type(exc).__name__
    if status is None:
        return PveError(f"{what}: no answer from Proxmox ({type(exc).__name__}: {text})")
    return PveError(f"{what}: HTTP {status} {text}", status)


def parse_smbios_uuid(smbios1: str | None) -> str | None:
    """The `uuid=` of a VM config's `smbios1` value, lower-cased, or None."""
    if not smbios1:
        return None
    for part in smbios1.split(","):
        key, _, value = part.partition("=")
        if key.strip() == "uuid" and value.strip():
            return value.strip().lower()
    return None


def parse_tags(tags: str | None) -> list[str]:
    """Proxmox tags (`a;b`, older `a,b` or spaces) as a sorted list."""
    if not tags:
        return []
    for sep in (",", " "):
        tags = tags.replace(sep, ";")
    return sorted({t.strip() for t in tags.split(";") if t.strip()})
