"""The Proxmox poller: one background job per cluster, never on the scrape path.

Each poll makes the same two calls whatever the guest count (`/cluster/resources?type=vm`, which
also gives each guest's hypervisor-side activity, and `/cluster/status`), plus two small bounded
batches: `status/current` of silent running QEMU guests (to tell paused or io-error guests from hung
ones) and VM configs while SMBIOS UUIDs wait to be mapped. A failed poll keeps the previous snapshot
and marks the cluster down; clusters are polled independently, so one failing does not touch another.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from vmhealth.config import ClusterConfig, ExporterConfig, ThresholdsConfig
from vmhealth.pve import PveClient, PveError, parse_smbios_uuid, parse_tags

from .state import Amount, GuestState, PveGuest, Snapshot

if TYPE_CHECKING:
    from .persistence import GuestStateArchive

log = logging.getLogger(__name__)
UNKNOWN_GUEST_TTL_FACTOR = 12  # forget unlisted guests silent for 12 stale timeouts (at least 1h)
# The /cluster/resources fields of a guest's activity, kept as Proxmox gives them.
ACTIVITY_FIELDS = ("uptime", "cpu", "diskread", "diskwrite", "netin", "netout")


class IdleRecord(NamedTuple):
    """What the exporter knows of a guest's I/O at one poll; kept in the database while it is idle."""

    at: float  # poll time
    total: Amount  # diskwrite + netout
    node: str
    last_active: float


# A comparison with a look older than this tells nothing: a guest may have been busy in between.
RESTORE_WITHIN = 300.0


class IoActivity:
    """When each running guest of one cluster was last I/O-active, judged from poll to poll.

    Proxmox's counters say how much a guest wrote to disk and sent on the network since its process
    started, not when. A guest counts as active at a poll when it is seen for the first time (or
    again, after it was not running or its counters were missing, or after more than
    `RESTORE_WITHIN` seconds), when the sum of the two went backwards (restart) or its node changed
    (migration), or when the sum grew by more than `idle_bytes_per_second` times the seconds since
    the previous poll. So a guest only reads as idle after two consecutive polls showing (almost) no
    growth. Only guests listed in the last poll are kept.

    A guest that turns idle is handed out once by `to_store()`, so that an exporter restart does not
    make a hung guest look active again (which would resolve its alert while its reset runs): the
    records given to the constructor are compared with the first poll like a previous poll.
    """

    def __init__(self, idle_bytes_per_second: float, restored: dict[int, IdleRecord] | None = None):
        self.idle_bytes_per_second = idle_bytes_per_second
        self._seen: dict[int, IdleRecord] = dict(restored or {})
        self._stored: set[int] = set(self._seen)  # guests whose current idle spell is in the database
        self._lock = threading.Lock()

    def update(self, observed: dict[int, tuple[str, Amount]], now: float) -> dict[int, float]:
        """vmid -> last active time, from this poll's (node, diskwrite + netout) of the running guests
        that have both counters; every other guest is forgotten."""
        with self._lock:
            seen: dict[int, IdleRecord] = {}
            for vmid, (node, total) in observed.items():
                prev = self._seen.get(vmid)
                if prev is None or node != prev.node or total < prev.total or now - prev.at > RESTORE_WITHIN \
                        or total - prev.total > self.idle_bytes_per_second * (now - prev.at):
                    last_active = now
                    self._stored.discard(vmid)
                else:
                    last_active = prev.last_active
                seen[vmid] = IdleRecord(now, total, node, last_active)
            self._seen = seen
            self._stored &= set(seen)
        return {vmid: entry.last_active for vmid, entry in seen.items()}

    def to_store(self) -> dict[int, IdleRecord]:
        """The guests that turned idle since they were last stored (idle: not active at the last poll)."""
        with self._lock:
            return {vmid: r for vmid, r in self._seen.items() if r.last_active < r.at and vmid not in self._stored}

    def stored(self, vmids: Iterable[int]) -> None:
        with self._lock:
            self._stored.update(vmid for vmid in vmids if vmid in self._seen)

    def __len__(self) -> int:
        return len(self._seen)


def _amount(item: dict[str, Any], key: str, vmid: int) -> Amount | None:
    """The number >= 0 under `key`, or None when the key is missing or holds something else."""
    value = item.get(key)
    if value is None:
        return None
    kind = type(value)  # the common case first: 6 fields x every guest x every poll
    if (kind is int and value >= 0) or (kind is float and 0 <= value < math.inf):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # a string that is no number stays a string: left out below
            value = int(value) if value.strip().isdigit() else float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        log.debug("guest %s: %s is %r, not a number >= 0; left out", vmid, key, value)
        return None
    return value


def snapshot_from(resources: list[dict[str, Any]], status: list[dict[str, Any]], now: float,
                  io: IoActivity | None = None) -> Snapshot:
    """A Snapshot from the two poll responses; templates are left out.

    With `io`, each running guest's `io_last_active` is judged against the previous poll's.
    """
    fields: dict[int, dict[str, Any]] = {}
    for item in resources:
        if item.get("type") not in ("qemu", "lxc") or item.get("template"):
            continue
        try:
            vmid = int(item["vmid"])
        except (KeyError, TypeError, ValueError):
            continue
        fields[vmid] = {
            "vmid": vmid,
            "node": str(item.get("node", "")),
            "name": str(item.get("name", "")),
            "type": str(item["type"]),
            "status": str(item.get("status", "unknown")),
            "lock": str(item.get("lock") or ""),
            "tags": tuple(parse_tags(item.get("tags"))),
            **{key: _amount(item, key, vmid) for key in ACTIVITY_FIELDS},
        }
    last_active: dict[int, float] = {}
    if io is not None:
        last_active = io.update({
            vmid: (f["node"], f["diskwrite"] + f["netout"]) for vmid, f in fields.items()
            if f["status"] == "running" and f["diskwrite"] is not None and f["netout"] is not None
        }, now)
    guests = {vmid: PveGuest(**f, io_last_active=last_active.get(vmid)) for vmid, f in fields.items()}
    nodes: dict[str, bool] = {}
    quorate = True  # a standalone node has no cluster entry and is its own quorum
    for item in status:
        if item.get("type") == "node":
            nodes[str(item.get("name"))] = bool(item.get("online"))
        elif item.get("type") == "cluster":
            quorate = bool(item.get("quorate"))
    # Nodes that only appear on guests (a standalone node's /cluster/status may omit fields).
    for guest in guests.values():
        nodes.setdefault(guest.node, True)
    return Snapshot(guests=guests, nodes=nodes, quorate=quorate, taken_at=now)


class ClusterPoller:
    """Polls one cluster into the guest state."""

    def __init__(self, cluster: ClusterConfig, guests: GuestState, exporter: ExporterConfig,
                 thresholds: ThresholdsConfig, idle_db: GuestStateArchive | None = None,
                 restored: dict[int, IdleRecord] | None = None):
        self.cluster = cluster
        self.name: str = cluster.name
        self.guests = guests
        self.client = PveClient(cluster)
        self.stale_timeout: float = thresholds.stale_timeout
        self.status_checks: int = exporter.status_checks_per_poll
        self.uuid_lookups: int = exporter.uuid_lookups_per_poll
        self.io = IoActivity(thresholds.io_idle_bytes_per_second, restored)
        self.idle_db = idle_db
        self._was_up: bool | None = None

    def poll(self) -> bool:
        """One poll; True when Proxmox answered. Never raises."""
        started = time.monotonic()
        try:
            resources = self.client.get("cluster/resources", type="vm")
            status = self.client.cluster_status()
            snapshot = snapshot_from(resources, status, time.time(), self.io)
        except PveError as exc:
            return self._failed(str(exc), started)
        except Exception as exc:  # a malformed answer must not stop the poller
            log.exception("cluster %s: unexpected poll error", self.name)
            return self._failed(f"{type(exc).__name__}: {exc}", started)
        self.guests.apply_snapshot(self.name, snapshot, time.monotonic() - started)
        self._store_idle()
        if self._was_up is not True:
            log.info("cluster %s: Proxmox reachable, %d guests on %d nodes",
                     self.name, len(snapshot.guests), len(snapshot.nodes))
        self._was_up = True
        self._check_silent_guests(snapshot)
        self._lookup_uuids(snapshot)
        ttl = max(3600.0, UNKNOWN_GUEST_TTL_FACTOR * self.stale_timeout)
        gone = self.guests.expire_unknown(self.name, time.time() - ttl)
        if gone:
            log.info("cluster %s: forgot %d guests Proxmox no longer lists", self.name, len(gone))
        return True

    def _failed(self, error: str, started: float) -> bool:
        self.guests.poll_failed(self.name, error, time.monotonic() - started)
        if self._was_up is not False:
            log.warning("cluster %s: poll failed, keeping the last snapshot: %s", self.name, error)
        else:
            log.debug("cluster %s: poll failed again: %s", self.name, error)
        self._was_up = False
        return False

    def _store_idle(self) -> None:
        """Write the guests that turned idle; a failed write is tried again at the next poll."""
        records = self.io.to_store()
        if not records or self.idle_db is None:
            return
        try:
            self.idle_db.write_idle(self.name, records)
        except Exception as exc:
            log.warning("cluster %s: cannot store the I/O state of %d idle guests: %s", self.name, len(records), exc)
            return
        self.io.stored(records)

    def _answers(self, guests: Iterable[PveGuest], what: str, read: Callable[[str, str, int], dict[str, Any]],
                 ) -> Iterator[tuple[PveGuest, dict[str, Any]]]:
        """(guest, Proxmox's answer) for each guest it answers about; one it does not is asked again next poll."""
        for guest in guests:
            try:
                answer = read(guest.node, guest.type, guest.vmid)
            except PveError as exc:
                log.debug("cluster %s: %s of %s unavailable: %s", self.name, what, guest.vmid, exc)
                continue
            yield guest, answer

    def _check_silent_guests(self, snapshot: Snapshot) -> None:
        """Read qmpstatus of running QEMU guests whose heartbeat is half-way to stale (bounded per poll).

        Half-way, not stale: a paused guest is then known as paused a poll or more before its heartbeat
        goes stale, so `VMHung` (whose `for:` is short) never even turns pending for it. A healthy
        guest's heartbeat (every 30s against a 90s timeout by default) never gets that old."""
        if self.status_checks <= 0:
            return
        now = time.time()
        _, heartbeats = self.guests.view()
        silent = [
            guest for guest in snapshot.guests.values()
            if guest.type == "qemu" and guest.running and snapshot.nodes.get(guest.node, False)
            and (hb := heartbeats.get((self.name, guest.vmid))) is not None
            and now - hb.received > self.stale_timeout / 2
        ]
        for guest, current in self._answers(silent[: self.status_checks], "status", self.client.guest_status):
            self.guests.set_paused(self.name, guest.vmid, current.get("qmpstatus"))

    def _lookup_uuids(self, snapshot: Snapshot) -> None:
        """Read VM configs for their SMBIOS UUIDs while reports wait for one (bounded per poll)."""
        if self.uuid_lookups <= 0 or not self.guests.pending_uuids():
            return
        with self.guests.lock:
            done = set(self.guests.clusters[self.name].configs_read)
            have_heartbeat = {vmid for (c, vmid) in self.guests.heartbeats if c == self.name}
        todo = [g for g in snapshot.guests.values() if g.type == "qemu" and g.vmid not in done]
        todo.sort(key=lambda g: (g.vmid in have_heartbeat, g.vmid))  # silent guests first
        found = {guest.vmid: parse_smbios_uuid(config.get("smbios1"))
                 for guest, config in self._answers(todo[: self.uuid_lookups], "config", self.client.guest_config)}
        if found:
            self.guests.add_uuids(self.name, found)
