"""What the exporter knows: each cluster's last Proxmox snapshot and each guest's last heartbeat.

Everything lives in memory behind one lock; the poller replaces a cluster's snapshot whole, ingest
replaces one guest's heartbeat whole, and readers (`/metrics`, `/api/vms`) take shallow copies under
the lock and do their work outside it. Guests are identified by (cluster, vmid), whatever node they
are on.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace

from vmhealth.config import ClusterConfig
from vmhealth.keys import derive_vm_key

log = logging.getLogger(__name__)
# Disks kept per report: each is two series (used, total), so a guest's disk series are at most 32.
# node_exporter's users rarely watch more than 16 filesystems of one machine, and the agent sends the
# first 16 of its `agent.mounts`; `ingest` drops the entries after these.
MAX_DISKS = 16
GuestKey = tuple[str, int]
Amount = int | float  # a number as Proxmox gave it
# A guest's label values: its hostname (the vmhealth_guest_info series), the node it reports (a label
# of all its series while Proxmox does not list it) and its mountpoints (two disk series each).
# Prometheus keeps every series it has seen, so a key that changes them at will grows Prometheus
# without end. A guest's first report is taken as sent (one hostname, one node, MAX_DISKS mountpoints);
# after that it may bring a value it did not send in its last report only with a token, earned one
# every LABEL_TOKEN_SECONDS, at most NEW_LABELS_PER_HOUR held, none held at its first report or at the
# exporter's start. So in any hour a guest adds at most 24 values (12 held and 12 earned), 48 series,
# and 12 an hour over longer times. A value without a token is dropped (the previous hostname and
# node are kept, a new mountpoint is left out); the heartbeat itself is always stored.
NEW_LABELS_PER_HOUR = 12
LABEL_TOKEN_SECONDS = 3600 / NEW_LABELS_PER_HOUR


@dataclass(frozen=True)
class PveGuest:
    """One guest as /cluster/resources describes it (templates are never stored).

    The activity fields are None where Proxmox's entry lacks the key (or holds no number >= 0):
    an older PVE, a guest that just started. `io_last_active` is the poller's judgement, not Proxmox's
    (see `poller.IoActivity`).
    """

    vmid: int
    node: str
    name: str
    type: str  # qemu | lxc
    status: str  # running | stopped | …
    lock: str = ""
    tags: tuple[str, ...] = ()
    uptime: Amount | None = None  # seconds
    cpu: Amount | None = None  # share of its vCPUs, 0-1
    diskread: Amount | None = None  # bytes since the guest's process started, like the three below
    diskwrite: Amount | None = None
    netin: Amount | None = None
    netout: Amount | None = None  # bytes the guest transmitted
    io_last_active: float | None = None  # Unix time of the last poll that saw the guest I/O-active

    @property
    def running(self) -> bool:
        return self.status == "running"


@dataclass(frozen=True)
class Snapshot:
    """A cluster as one successful poll saw it."""

    guests: dict[int, PveGuest]
    nodes: dict[str, bool]  # node -> online
    quorate: bool
    taken_at: float


@dataclass
class ClusterState:
    """Per-cluster poll results; the snapshot survives failed polls."""

    name: str
    snapshot: Snapshot | None = None
    up: bool = False
    polled_once: bool = False  # at least one poll finished, ok or not
    last_error: str = ""
    poll_duration: float = 0.0
    last_success: float = 0.0
    poll_errors: int = 0  # failed polls since the start: a failure between two scrapes still counts
    # vmid -> qmpstatus, for silent running QEMU guests whose status/current said not "running".
    paused: dict[int, str] = field(default_factory=dict)
    # SMBIOS UUID (lower case) -> vmid, from VM configs read so far; vmids whose config was read.
    uuids: dict[str, int] = field(default_factory=dict)
    configs_read: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class Disk:
    mountpoint: str
    used_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class Heartbeat:
    """A guest's last report; `received` (server time) is the heartbeat time."""

    received: float
    hostname: str = ""
    node: str = ""  # as the guest reported it; Proxmox's view wins when known
    status: str = ""
    cpu_ratio: float | None = None
    mem_used: int | None = None
    mem_total: int | None = None
    disk_used: int | None = None
    disk_total: int | None = None
    uptime: float | None = None
    disks: tuple[Disk, ...] = ()
    net_rx: int | None = None
    net_tx: int | None = None
    load1: float | None = None
    agent_version: str = ""
    guest_timestamp: float | None = None


class _LabelBudget:
    """A guest's tokens for new label values (see NEW_LABELS_PER_HOUR), and what was last logged."""

    __slots__ = ("at", "limited", "over_disks", "tokens")

    def __init__(self, at: float):
        self.tokens, self.at = 0.0, at
        self.limited = self.over_disks = False

    def take(self, wanted: int, now: float) -> int:
        """How many of `wanted` new values may be stored now; those are paid for."""
        self.tokens = min(float(NEW_LABELS_PER_HOUR), self.tokens + max(0.0, now - self.at) / LABEL_TOKEN_SECONDS)
        self.at = now
        granted = min(wanted, int(self.tokens))
        self.tokens -= granted
        return granted


def _same_labels(old: Heartbeat, new: Heartbeat, node_counts: bool) -> bool:
    """Whether `new` brings no label value that `old` did not have (the common case, checked first).

    `node_counts`: the reported node is a label (Proxmox does not list the guest, or not yet).
    """
    if old.hostname != new.hostname or (node_counts and old.node != new.node):
        return False
    if len(old.disks) == len(new.disks) and \
            all(a.mountpoint == b.mountpoint for a, b in zip(old.disks, new.disks, strict=True)):
        return True
    known = {d.mountpoint for d in old.disks}
    return all(d.mountpoint in known for d in new.disks)


def _bound_labels(old: Heartbeat, new: Heartbeat, node_counts: bool, budget: _LabelBudget, now: float,
                  ) -> tuple[Heartbeat, list[str]]:
    """`new` with the label values it may not bring replaced by the old ones or left out, and those values."""
    known = {d.mountpoint for d in old.disks}
    wanted: list[tuple[str, str]] = []
    if new.hostname != old.hostname:
        wanted.append(("hostname", new.hostname))
    if node_counts and new.node != old.node:
        wanted.append(("node", new.node))
    wanted += [("mountpoint", d.mountpoint) for d in new.disks if d.mountpoint not in known]
    granted = budget.take(len(wanted), now)
    refused = wanted[granted:]
    if not refused:
        return new, []
    kinds = {kind for kind, _ in refused}
    refused_mounts = {value for kind, value in refused if kind == "mountpoint"}
    kept = replace(new, hostname=old.hostname if "hostname" in kinds else new.hostname,
                   node=old.node if "node" in kinds else new.node,
                   disks=tuple(d for d in new.disks if d.mountpoint not in refused_mounts))
    return kept, [f"{kind} {value[:64]!r}" for kind, value in refused]


def _state_changes(budget: _LabelBudget, refused: list[str], disks_dropped: int) -> list[tuple[int, str]]:
    """What to log about a guest's report: only a change from its previous report, never every report."""
    notes = []
    if budget.limited != bool(refused):
        budget.limited = bool(refused)
        if refused:
            more = " …" if len(refused) > 4 else ""
            notes.append((logging.WARNING, f"brings new label values faster than {NEW_LABELS_PER_HOUR} an hour; its "
                          f"heartbeats are stored with its previous ones, without {', '.join(refused[:4])}{more}"))
        else:
            notes.append((logging.INFO, "brings new label values within the limit again"))
    if budget.over_disks != bool(disks_dropped):
        budget.over_disks = bool(disks_dropped)
        notes.append((logging.WARNING, f"sends more than {MAX_DISKS} disks; the {disks_dropped} after those are left "
                      "out") if disks_dropped else (logging.INFO, f"sends at most {MAX_DISKS} disks again"))
    return notes


class GuestState:
    """The exporter's state, shared by the ingest threads, the poller and the readers."""

    def __init__(self, clusters: list[ClusterConfig], api_key: str | None, max_unknown: int):
        self.lock = threading.Lock()
        self.clusters: dict[str, ClusterState] = {c.name: ClusterState(c.name) for c in clusters}
        self.heartbeats: dict[GuestKey, Heartbeat] = {}
        self.dirty: set[GuestKey] = set()
        self.removed: set[GuestKey] = set()
        self.api_key = api_key
        self.max_unknown = max_unknown
        # Per cluster, the guests that report but Proxmox does not list; before a cluster's first
        # successful poll, the guests that report and were not restored from the database. Both are
        # bounded by `max_unknown` (see `admit`).
        self._unknown: dict[str, set[int]] = {name: set() for name in self.clusters}
        # Guests Proxmox has listed (in this process, or before: only those were ever written). Only
        # these are persisted; the others live in memory until a poll lists them or they expire.
        self._confirmed: set[GuestKey] = set()
        # per-VM key -> guest, rebuilt when a cluster's guest set changes
        self._vm_keys: dict[str, GuestKey] = {}
        self._vm_keys_by_cluster: dict[str, dict[str, GuestKey]] = {}
        self._pending_uuids: dict[str, float] = {}
        self._budgets: dict[GuestKey, _LabelBudget] = {}
        self._started = time.time()
        # What changed since the /metrics page last looked (see `page_view`): guests, and clusters
        # whose snapshot was replaced (every guest of those is compared again).
        self._page_keys: set[GuestKey] = set()
        self._page_clusters: set[str] = set(self.clusters)

    # --- ingest -----------------------------------------------------------------------------
    def key_owner(self, key: str) -> GuestKey | None:
        """The guest a per-VM key belongs to, among the guests Proxmox lists."""
        return self._vm_keys.get(key)

    def vm_key_matches(self, key: str, cluster: str, vmid: int) -> bool:
        from vmhealth.keys import same_secret

        return bool(self.api_key) and same_secret(key, derive_vm_key(self.api_key or "", cluster, vmid))

    def clusters_listing(self, vmid: int) -> list[str]:
        with self.lock:
            return [
                name for name, state in self.clusters.items() if state.snapshot and vmid in state.snapshot.guests
            ]

    def vmid_for_uuid(self, uuid: str, queue: bool = True) -> GuestKey | None:
        """The guest whose VM config has this SMBIOS UUID; unknown ones are queued for lookup."""
        uuid = uuid.lower()
        with self.lock:
            for name, state in self.clusters.items():
                vmid = state.uuids.get(uuid)
                if vmid is not None:
                    return name, vmid
            if queue and len(self._pending_uuids) < 10_000:
                self._pending_uuids.setdefault(uuid, time.time())
        return None

    def pending_uuids(self) -> int:
        with self.lock:
            return len(self._pending_uuids)

    def admit(self, cluster: str, vmid: int) -> tuple[str, str] | None:
        """None when a report for this guest may be stored, else (result label, why not).

        Guests Proxmox lists are always admitted, and so is any guest already reporting. Others count
        against `exporter.max_unknown_guests` per cluster. Before a cluster's first successful poll
        nothing can be told apart, so the same bound applies to every guest not restored from the
        database (which holds only guests Proxmox listed): an exporter that starts while Proxmox is
        unreachable holds at most that many guests it has never seen listed, whatever anyone sends.
        The restored guests keep reporting; a guest new to the exporter waits (404, its agent tries
        again every interval) until the first poll lists it, unless it fits in the bound.
        """
        key = (cluster, vmid)
        with self.lock:
            if key in self.heartbeats:
                return None
            state = self.clusters[cluster]
            if state.snapshot is not None and vmid in state.snapshot.guests:
                return None
            if len(self._unknown[cluster]) < self.max_unknown:
                return None
            if state.snapshot is None:
                return "not_polled_yet", (
                    f"cluster {cluster!r} has not been read from Proxmox yet, and the limit of {self.max_unknown} "
                    f"guests it did not list before (exporter.max_unknown_guests) is reached; vmid {vmid} will be "
                    "accepted once a poll lists it")
            return "unknown_guest", (
                f"vmid {vmid} is not a guest Proxmox lists in cluster {cluster!r}, and the limit of "
                f"{self.max_unknown} unknown guests (exporter.max_unknown_guests) is reached")

    def record(self, cluster: str, vmid: int, heartbeat: Heartbeat, disks_dropped: int = 0) -> int:
        """Store a guest's heartbeat; the number of new label values dropped (see NEW_LABELS_PER_HOUR).

        `disks_dropped`: entries the report had beyond `ingest.MAX_DISKS`, only for the log (one line
        when a guest starts sending too many, one when it stops; likewise for label values).
        """
        key = (cluster, vmid)
        refused: list[str] = []
        notes: list[tuple[int, str]] = []  # (log level, what changed), logged outside the lock
        with self.lock:
            old = self.heartbeats.get(key)
            budget = self._budgets.get(key)
            snapshot = self.clusters[cluster].snapshot
            node_counts = snapshot is None or vmid not in snapshot.guests
            if old is None:
                budget = self._budgets[key] = _LabelBudget(heartbeat.received)
            elif not _same_labels(old, heartbeat, node_counts):
                if budget is None:
                    budget = self._budgets[key] = _LabelBudget(self._started)
                heartbeat, refused = _bound_labels(old, heartbeat, node_counts, budget, heartbeat.received)
            if budget is None and disks_dropped:
                budget = self._budgets[key] = _LabelBudget(self._started)
            if budget is not None:
                notes = _state_changes(budget, refused, disks_dropped)
            self.heartbeats[key] = heartbeat
            self.dirty.add(key)
            self._page_keys.add(key)
            self.removed.discard(key)
            if (key not in self._confirmed) if snapshot is None else (vmid not in snapshot.guests):
                self._unknown[cluster].add(vmid)
            self.clusters[cluster].paused.pop(vmid, None)
        for level, note in notes:
            log.log(level, "guest %s/%d %s", cluster, vmid, note)
        return len(refused)

    # --- polling ----------------------------------------------------------------------------
    def apply_snapshot(self, cluster: str, snapshot: Snapshot, duration: float) -> None:
        with self.lock:
            state = self.clusters[cluster]
            changed = state.snapshot is None or state.snapshot.guests.keys() != snapshot.guests.keys()
            state.snapshot = snapshot
            self._page_clusters.add(cluster)
            state.up = True
            state.polled_once = True
            state.last_error = ""
            state.poll_duration = duration
            state.last_success = snapshot.taken_at
            state.paused = {v: s for v, s in state.paused.items() if v in snapshot.guests}
            self._unknown[cluster] = {
                vmid for (c, vmid) in self.heartbeats if c == cluster and vmid not in snapshot.guests
            }
            if changed:
                self._confirmed.update((cluster, vmid) for vmid in snapshot.guests)
        if changed and self.api_key:
            self._rebuild_keys(cluster, snapshot)

    def _rebuild_keys(self, cluster: str, snapshot: Snapshot) -> None:
        keys = {derive_vm_key(self.api_key or "", cluster, vmid): (cluster, vmid) for vmid in snapshot.guests}
        with self.lock:
            self._vm_keys_by_cluster[cluster] = keys
            merged: dict[str, GuestKey] = {}
            for part in self._vm_keys_by_cluster.values():
                merged.update(part)
            self._vm_keys = merged

    def poll_failed(self, cluster: str, error: str, duration: float) -> None:
        with self.lock:
            state = self.clusters[cluster]
            state.up = False
            state.polled_once = True
            state.poll_errors += 1
            state.last_error = error
            state.poll_duration = duration

    def set_paused(self, cluster: str, vmid: int, qmpstatus: str | None) -> None:
        with self.lock:
            paused = self.clusters[cluster].paused
            self._page_keys.add((cluster, vmid))
            if qmpstatus and qmpstatus != "running":
                paused[vmid] = qmpstatus
            else:
                paused.pop(vmid, None)

    def add_uuids(self, cluster: str, found: dict[int, str | None]) -> None:
        """Record VM configs read: vmid -> SMBIOS UUID (None when the config has none)."""
        with self.lock:
            state = self.clusters[cluster]
            for vmid, uuid in found.items():
                state.configs_read.add(vmid)
                if uuid:
                    state.uuids[uuid] = vmid
                    self._pending_uuids.pop(uuid, None)

    def expire_unknown(self, cluster: str, older_than: float) -> list[GuestKey]:
        """Forget guests Proxmox no longer lists that have been silent since `older_than`."""
        with self.lock:
            snapshot = self.clusters[cluster].snapshot
            if snapshot is None:
                return []
            gone = [
                key for key, hb in self.heartbeats.items()
                if key[0] == cluster and key[1] not in snapshot.guests and hb.received < older_than
            ]
            for key in gone:
                del self.heartbeats[key]
                self._page_keys.add(key)
                self.dirty.discard(key)
                self.removed.add(key)
                self._unknown[cluster].discard(key[1])
                self._confirmed.discard(key)
                self._budgets.pop(key, None)
            cutoff = time.time() - 3600
            self._pending_uuids = {u: t for u, t in self._pending_uuids.items() if t > cutoff}
        return gone

    # --- persistence ------------------------------------------------------------------------
    def load(self, heartbeats: dict[GuestKey, Heartbeat]) -> None:
        """Restore last-seen state at start; guests of clusters no longer configured are ignored.

        What was stored had been listed by Proxmox, so these guests count as confirmed.
        """
        with self.lock:
            for key, hb in heartbeats.items():
                if key[0] in self.clusters:
                    self.heartbeats[key] = hb
                    self._page_keys.add(key)
                    self._confirmed.add(key)

    def take_changes(self) -> tuple[dict[GuestKey, Heartbeat], set[GuestKey]]:
        """The heartbeats changed and the guests removed since the last call.

        Guests Proxmox has not listed stay out (and stay marked changed): they are written once a
        poll lists them, never before, so a forged guest is never restored at the next start.
        """
        with self.lock:
            changed = {key: self.heartbeats[key] for key in self.dirty
                       if key in self.heartbeats and key in self._confirmed}
            removed = set(self.removed)
            self.dirty = {key for key in self.dirty if key in self.heartbeats and key not in self._confirmed}
            self.removed.clear()
        return changed, removed

    def restore_changes(self, changed: dict[GuestKey, Heartbeat], removed: set[GuestKey]) -> None:
        """Put back changes a failed write did not store, so the next flush retries them."""
        with self.lock:
            self.dirty.update(k for k in changed if k in self.heartbeats)
            self.removed.update(k for k in removed if k not in self.heartbeats)

    # --- reading ----------------------------------------------------------------------------
    def view(self) -> tuple[dict[str, ClusterState], dict[GuestKey, Heartbeat]]:
        """Shallow copies that readers may iterate without the lock."""
        with self.lock:
            clusters = {
                name: ClusterState(
                    name=s.name, snapshot=s.snapshot, up=s.up, polled_once=s.polled_once,
                    last_error=s.last_error, poll_duration=s.poll_duration, last_success=s.last_success,
                    poll_errors=s.poll_errors, paused=dict(s.paused),
                )
                for name, s in self.clusters.items()
            }
            return clusters, dict(self.heartbeats)

    def page_view(self) -> tuple[dict[str, ClusterState], dict[GuestKey, Heartbeat], set[GuestKey], set[str]]:
        """`view()` plus what changed since the last call: guests, and clusters with a new snapshot.

        For the one /metrics page, which then formats only those guests again.
        """
        with self.lock:
            keys, self._page_keys = self._page_keys, set()
            names, self._page_clusters = self._page_clusters, set()
        clusters, heartbeats = self.view()
        return clusters, heartbeats, keys, names
