"""Proxmox's hypervisor-side view of each guest: the activity series, and when a guest was last I/O-active.

The rules of `io_last_active` are checked with `snapshot_from` and an `IoActivity` at chosen poll times;
the series with a real poll (responses) and the kept /metrics page.
"""

from __future__ import annotations

import logging
import subprocess
import time

import pytest
import responses

from tests.helpers.exporter import PVE, cluster_status, exporter_config, resource
from vmhealth.config import ConfigError, load
from vmhealth.exporter.app import create_app
from vmhealth.exporter.exposition import Page
from vmhealth.exporter.poller import RESTORE_WITHIN, IdleRecord, IoActivity, snapshot_from
from vmhealth.exporter.state import GuestState

BASE = "cluster=lab,node=pve1,vmid=100"
ACTIVITY = {  # series -> the /cluster/resources key it comes from
    "vmhealth_pve_guest_disk_read_bytes_total": "diskread",
    "vmhealth_pve_guest_disk_written_bytes_total": "diskwrite",
    "vmhealth_pve_guest_network_receive_bytes_total": "netin",
    "vmhealth_pve_guest_network_transmit_bytes_total": "netout",
    "vmhealth_pve_guest_cpu_usage_ratio": "cpu",
    "vmhealth_pve_guest_uptime_seconds": "uptime",
}
LAST_ACTIVE = "vmhealth_pve_guest_io_last_active_timestamp_seconds"
NODES = cluster_status({"pve1": True, "pve2": True})
CLUSTER = {"name": "lab", "host": "pve1:8006", "token_id": "monitor@pve!vmhealth", "token_secret": "s3cret"}


def samples(page: bytes | str) -> dict[str, float]:
    """name{labels} -> value, using the client library's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(page.decode() if isinstance(page, bytes) else page):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def types(page: str) -> dict[str, str]:
    from prometheus_client.parser import text_string_to_metric_families

    return {family.name: family.type for family in text_string_to_metric_families(page)}


def guest(vmid: int = 100, **fields) -> dict:
    """A running guest's /cluster/resources entry; a field given as None is left out, as Proxmox omits it."""
    item = resource(vmid, **{k: v for k, v in fields.items() if v is not None})
    for key in [k for k, v in fields.items() if v is None]:
        del item[key]
    return item


@pytest.fixture
def app(tmp_path):
    app = create_app(exporter_config(tmp_path), start=False)
    yield app
    app.extensions["vmhealth"].archive.close()


def poll(app, guests: list[dict]) -> str:
    """One poll of Proxmox answering `guests`, then the /metrics page."""
    with responses.RequestsMock() as rsps:
        rsps.get(f"{PVE}/cluster/resources", json={"data": guests})
        rsps.get(f"{PVE}/cluster/status", json={"data": NODES})
        assert app.extensions["vmhealth"].pollers["lab"].poll() is True
    reply = app.test_client().get("/metrics")
    assert reply.status_code == 200
    return reply.get_data(as_text=True)


# --- the series ---------------------------------------------------------------------------------


def test_activity_series_as_proxmox_gives_them(app, promtool):
    before = time.time()
    page = poll(app, [guest(diskread=11, diskwrite=22, netin=33, netout=44, cpu=0.25, uptime=3600),
                      guest(101, node="pve2", diskread=7 * 2**40, cpu=0.0123456789)])
    after = time.time()
    s = samples(page)
    assert s[f"vmhealth_pve_guest_disk_read_bytes_total{{{BASE}}}"] == 11
    assert s[f"vmhealth_pve_guest_disk_written_bytes_total{{{BASE}}}"] == 22
    assert s[f"vmhealth_pve_guest_network_receive_bytes_total{{{BASE}}}"] == 33
    assert s[f"vmhealth_pve_guest_network_transmit_bytes_total{{{BASE}}}"] == 44
    assert s[f"vmhealth_pve_guest_cpu_usage_ratio{{{BASE}}}"] == 0.25
    assert s[f"vmhealth_pve_guest_uptime_seconds{{{BASE}}}"] == 3600
    assert before - 0.001 <= s[f"{LAST_ACTIVE}{{{BASE}}}"] <= after + 0.001, "active at first sight"
    other = "cluster=lab,node=pve2,vmid=101"
    assert s[f"vmhealth_pve_guest_disk_read_bytes_total{{{other}}}"] == 7 * 2**40
    assert s[f"vmhealth_pve_guest_cpu_usage_ratio{{{other}}}"] == pytest.approx(0.0123456789, abs=1e-6)
    kinds = types(page)
    for name in ACTIVITY:
        expected = "counter" if name.endswith("_total") else "gauge"
        assert kinds[name.removesuffix("_total")] == expected, name
    assert kinds[LAST_ACTIVE] == "gauge"
    result = subprocess.run([promtool, "check", "metrics"], input=page.encode(), capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


@pytest.mark.parametrize("key", sorted(ACTIVITY.values()))
def test_a_missing_key_gives_no_line_never_zero(app, key):
    s = samples(poll(app, [guest(**{key: None})]))
    for name, source in ACTIVITY.items():
        assert (f"{name}{{{BASE}}}" in s) is (source != key), name
    assert (f"{LAST_ACTIVE}{{{BASE}}}" in s) is (key not in ("diskwrite", "netout")), \
        "last_active needs both diskwrite and netout"


@pytest.mark.parametrize("bad", ["lots", "", -1, -0.5, True, float("nan"), float("inf"), [1], {"v": 1}])
def test_values_that_are_no_number_are_left_out_and_the_poll_goes_on(app, bad, caplog):
    caplog.set_level(logging.DEBUG, logger="vmhealth.exporter.poller")
    page = poll(app, [guest(diskwrite=bad, cpu=bad, uptime=bad), guest(101)])
    s = samples(page)
    assert app.extensions["vmhealth"].guests.clusters["lab"].up
    for name in ("vmhealth_pve_guest_disk_written_bytes_total", "vmhealth_pve_guest_cpu_usage_ratio",
                 "vmhealth_pve_guest_uptime_seconds", LAST_ACTIVE):
        assert f"{name}{{{BASE}}}" not in s, name
        assert f"{name}{{cluster=lab,node=pve1,vmid=101}}" in s, name
    assert s[f"vmhealth_pve_guest_network_transmit_bytes_total{{{BASE}}}"] == 2000, "the good fields stay"
    assert "guest 100: diskwrite is" in caplog.text


def test_a_number_sent_as_text_is_read():
    snapshot = snapshot_from([guest(diskwrite="123", cpu="0.5")], NODES, 1000.0)
    assert snapshot.guests[100].diskwrite == 123 and snapshot.guests[100].cpu == 0.5


def test_a_counter_going_backwards_is_exported_as_given(app):
    poll(app, [guest(diskwrite=5000, netout=6000)])
    s = samples(poll(app, [guest(diskwrite=10, netout=20)]))  # restarted: Proxmox counts from 0 again
    assert s[f"vmhealth_pve_guest_disk_written_bytes_total{{{BASE}}}"] == 10
    assert s[f"vmhealth_pve_guest_network_transmit_bytes_total{{{BASE}}}"] == 20


def test_a_guest_not_running_has_no_last_active(app):
    s = samples(poll(app, [guest(status="stopped", diskwrite=0, netout=0), guest(101, status="paused")]))
    assert f"{LAST_ACTIVE}{{{BASE}}}" not in s
    assert f"{LAST_ACTIVE}{{cluster=lab,node=pve1,vmid=101}}" not in s
    assert s[f"vmhealth_pve_guest_disk_written_bytes_total{{{BASE}}}"] == 0, "counters stay as Proxmox gives them"


def test_the_kept_page_follows_counters_that_change_alone(tmp_path):
    config = exporter_config(tmp_path)
    store, page, io = GuestState(config.clusters, None, 100), Page(config.exporter, config.thresholds), IoActivity(1024)
    for i, written in enumerate((1000, 1000, 9_000_000, 9_000_000)):
        store.apply_snapshot("lab", snapshot_from([guest(diskwrite=written, netout=0)], NODES, 1000.0 + 15 * i, io),
                             0.1)
        s = samples(page.scrape(store, {}, "identity")[0])
        assert s[f"vmhealth_pve_guest_disk_written_bytes_total{{{BASE}}}"] == written
        assert s[f"{LAST_ACTIVE}{{{BASE}}}"] == {0: 1000.0, 1: 1000.0, 2: 1030.0, 3: 1030.0}[i]


def test_config_series(tmp_path):
    app = create_app(exporter_config(tmp_path, thresholds={"io_window": "2m", "io_idle_bytes_per_second": 0}),
                     start=False)
    try:
        s = samples(poll(app, [guest()]))
    finally:
        app.extensions["vmhealth"].archive.close()
    assert s["vmhealth_config_io_window_seconds{cluster=lab}"] == 120
    assert s["vmhealth_config_io_idle_threshold_bytes_per_second{cluster=lab}"] == 0


def test_config_series_defaults(app):
    s = samples(poll(app, []))
    assert s["vmhealth_config_io_window_seconds{cluster=lab}"] == 60
    assert s["vmhealth_config_io_idle_threshold_bytes_per_second{cluster=lab}"] == 1024
    assert s["vmhealth_config_stale_timeout_seconds{cluster=lab}"] == 90


# --- when a guest was last I/O-active -----------------------------------------------------------


class Polls:
    """Successive polls of one cluster at chosen times, with a 100 B/s idle threshold."""

    def __init__(self, restored: dict[int, IdleRecord] | None = None) -> None:
        self.io = IoActivity(100, restored)

    def __call__(self, at: float, *guests: dict) -> dict[int, float | None]:
        snapshot = snapshot_from(list(guests), NODES, at, self.io)
        return {vmid: g.io_last_active for vmid, g in snapshot.guests.items()}


def io(written: int, sent: int = 0, **fields) -> dict:
    return guest(diskwrite=written, netout=sent, **fields)


def test_first_sight_is_active():
    assert Polls()(1000.0, io(5_000_000, 7)) == {100: 1000.0}


def test_growth_above_the_threshold_is_active():
    polls = Polls()
    polls(1000.0, io(0))
    assert polls(1010.0, io(600, 401)) == {100: 1010.0}, "1001 B in 10 s at 100 B/s"


@pytest.mark.parametrize(("written", "sent"), [(0, 0), (400, 600), (1000, 0), (0, 1000)])
def test_growth_at_or_below_the_threshold_keeps_the_old_time(written, sent):
    polls = Polls()
    polls(1000.0, io(0))
    assert polls(1010.0, io(written, sent)) == {100: 1000.0}
    assert polls(1020.0, io(written, sent)) == {100: 1000.0}, "it stays while the guest is idle"


def test_the_threshold_scales_with_the_time_between_polls():
    polls = Polls()
    polls(1000.0, io(0))
    assert polls(1060.0, io(5000)) == {100: 1000.0}, "5000 B in 60 s is under 100 B/s"
    assert polls(1061.0, io(5101)) == {100: 1061.0}, "101 B in 1 s is over"


def test_a_counter_going_backwards_is_active():
    polls = Polls()
    polls(1000.0, io(5000, 5000))
    polls(1010.0, io(5000, 5000))
    assert polls(1020.0, io(5000, 4999)) == {100: 1020.0}


def test_a_node_change_is_active():
    polls = Polls()
    polls(1000.0, io(5000))
    polls(1010.0, io(5000))
    assert polls(1020.0, io(5000, node="pve2")) == {100: 1020.0}
    assert polls(1030.0, io(5000, node="pve2")) == {100: 1020.0}


@pytest.mark.parametrize("missing", ["diskwrite", "netout"])
def test_counters_missing_then_back_are_active(missing):
    polls = Polls()
    polls(1000.0, io(5000))
    polls(1010.0, io(5000))
    gone = io(5000)
    del gone[missing]
    assert polls(1020.0, gone) == {100: None}
    assert polls(1030.0, io(5000)) == {100: 1030.0}, "the same values, but seen again after a gap"


def test_not_running_then_running_again_is_active():
    polls = Polls()
    polls(1000.0, io(5000))
    assert polls(1010.0, io(5000, status="stopped")) == {100: None}
    assert polls(1020.0, io(5000)) == {100: 1020.0}


def test_state_is_kept_only_for_guests_listed():
    polls = Polls()
    polls(1000.0, io(5000), io(5000, vmid=101), io(5000, vmid=102, status="stopped"))
    assert len(polls.io) == 2
    polls(1010.0, io(5000))
    assert len(polls.io) == 1, "101 is no longer listed, 102 does not run"
    assert polls(1020.0, io(5000), io(5000, vmid=101)) == {100: 1000.0, 101: 1020.0}, "101 is seen anew"


# --- across an exporter restart -------------------------------------------------------------------


def test_a_guest_turning_idle_is_handed_out_once_to_be_stored():
    polls = Polls()
    polls(1000.0, io(5000), io(9000, vmid=101))
    assert polls.io.to_store() == {}, "first sight is activity"
    polls(1010.0, io(5000), io(99_000, vmid=101))
    assert polls.io.to_store() == {100: IdleRecord(1010.0, 5000, "pve1", 1000.0)}, "101 is active"
    polls.io.stored([100])
    polls(1020.0, io(5000), io(99_000, vmid=101))
    assert polls.io.to_store() == {101: IdleRecord(1020.0, 99_000, "pve1", 1010.0)}, "100 is stored already"
    polls.io.stored([101])
    polls(1030.0, io(50_000), io(99_000, vmid=101))
    polls(1040.0, io(50_000), io(99_000, vmid=101))
    assert polls.io.to_store() == {100: IdleRecord(1040.0, 50_000, "pve1", 1030.0)}, "a new idle spell of 100"


def test_a_restored_idle_guest_stays_idle_since_its_old_time():
    restored = {100: IdleRecord(1000.0, 5000, "pve1", 900.0)}
    polls = Polls(restored)
    assert polls(1030.0, io(5000)) == {100: 900.0}
    assert polls.io.to_store() == {}, "what was restored is in the database already"


@pytest.mark.parametrize(("guest_now", "why"), [
    (io(9000), "it wrote 4000 B in 30 s, over 100 B/s"),
    (io(4000), "its counters went back: a new QEMU process"),
    (io(5000, node="pve2"), "it moved to another node"),
])
def test_a_restored_guest_that_changed_is_active(guest_now, why):
    polls = Polls({100: IdleRecord(1000.0, 5000, "pve1", 900.0)})
    assert polls(1030.0, guest_now) == {100: 1030.0}, why


def test_a_restored_record_older_than_the_restore_window_tells_nothing():
    polls = Polls({100: IdleRecord(1000.0, 5000, "pve1", 900.0)})
    assert polls(1000.0 + RESTORE_WITHIN + 1, io(5000)) == {100: 1000.0 + RESTORE_WITHIN + 1}


def test_an_exporter_restart_keeps_an_idle_guest_idle(tmp_path):
    """Two exporters one after the other on one database: the second judges the guest idle since the
    time the first saw it last active, not since its own first poll; a busy guest is active at once."""
    config = exporter_config(tmp_path)
    first = create_app(config, start=False)
    try:
        seen = samples(poll(first, [io(5000, 100), io(1, vmid=101)]))
        time.sleep(0.1)
        poll(first, [io(5000, 100), io(1, vmid=101)])  # no growth: both turn idle, and are stored
    finally:
        first.extensions["vmhealth"].archive.close()
    time.sleep(0.1)
    second = create_app(config, start=False)
    try:
        started = time.time()
        page = samples(poll(second, [io(5000, 100), io(10_000_000, vmid=101)]))
    finally:
        second.extensions["vmhealth"].archive.close()
    assert page[f"{LAST_ACTIVE}{{{BASE}}}"] == seen[f"{LAST_ACTIVE}{{{BASE}}}"]
    assert page[f"{LAST_ACTIVE}{{cluster=lab,node=pve1,vmid=101}}"] >= round(started, 3), "101 wrote 10 MB"


def test_each_cluster_has_its_own_activity(tmp_path):
    """A vmid in two clusters is two guests: polls of one never touch the other's state."""
    app = create_app(exporter_config(tmp_path, clusters=("lab", "b")), start=False)
    try:
        pollers = app.extensions["vmhealth"].pollers
        assert pollers["lab"].io is not pollers["b"].io
        assert pollers["lab"].io.idle_bytes_per_second == 1024
    finally:
        app.extensions["vmhealth"].archive.close()


# --- configuration ------------------------------------------------------------------------------


def problems(thresholds: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(raw={"clusters": [CLUSTER], "thresholds": thresholds}, environ={})
    return info.value.problems


def test_defaults():
    thresholds = load(raw={"clusters": [CLUSTER]}, environ={}).thresholds
    assert thresholds.io_window == 60 and thresholds.io_idle_bytes_per_second == 1024
    assert thresholds.stale_timeout == 90


def test_environment_overrides():
    env = {"VMHEALTH_THRESHOLDS_IO_WINDOW": "2m", "VMHEALTH_THRESHOLDS_IO_IDLE_BYTES_PER_SECOND": "0"}
    thresholds = load(raw={"clusters": [CLUSTER]}, environ=env).thresholds
    assert thresholds.io_window == 120 and thresholds.io_idle_bytes_per_second == 0


@pytest.mark.parametrize(("thresholds", "expected"), [
    ({"io_window": "0s"}, "thresholds.io_window: must be longer than 0s"),
    ({"io_window": 0}, "thresholds.io_window: must be longer than 0s"),
    ({"io_window": -5}, "thresholds.io_window: a duration cannot be negative"),
    ({"io_window": "soon"}, "thresholds.io_window: 'soon' is not a duration"),
    ({"io_idle_bytes_per_second": -1}, "thresholds.io_idle_bytes_per_second: -1.0 is below the minimum 0"),
    ({"io_idle_bytes_per_second": "lots"}, "thresholds.io_idle_bytes_per_second: expected a number, got 'lots'"),
    ({"io_idle_bytes_per_second": True}, "thresholds.io_idle_bytes_per_second: expected a number"),
])
def test_bad_values_name_the_key(thresholds, expected):
    found = problems(thresholds)
    assert any(line.startswith(expected) for line in found), found
