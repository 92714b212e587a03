"""Proxmox-side faults against the whole product: the simulator over HTTPS, `vmhealth exporter` and
`vmhealth webhook` as processes, the real Prometheus (the repository's rules, `for:` at 1/12) and the
real Alertmanager (the repository's routes and inhibitions), all from `vmhealth.stack`.

While polling, Proxmox down, slow (calls outlive `clusters[].timeout`) or refusing the exporter's
token (403) makes `vmhealth_pve_up` 0 and `ProxmoxAPIDown` fire, and a guest that hangs meanwhile is
never judged hung nor reset on the stale facts; once Proxmox answers again it is reset, once.

During a reset (the alert is given to Alertmanager, or straight to the webhook, the way it arrives
after VMHung fired; the guest is really hung in the simulator): an action answered 5xx is an
`unknown` attempt, settled from the node's task list and retried only after the cooldown; an action
that outlives the timeout is found in the task list and not sent again; a 403 is a `failed` attempt;
no quorum or an offline node is a refusal recorded with its reason; a guest that migrated after the
alert is reset on its new node, or left alone while its migration holds the lock. In every case the
simulator's task list, not the webhook's own account, shows how many resets were sent, and to which
node.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from tests.helpers.e2e import alerts, describe, ever_alerted, history, settled, tasks_since, whole_stack
from tests.helpers.webhook import firing
from vmhealth.durations import parse_duration
from vmhealth.stack.processes import wait_for
from vmhealth.stack.running import WEBHOOK_TOKEN, Stack

pytestmark = [pytest.mark.binaries, pytest.mark.slow]

# 3 nodes, 12 guests: pve1 holds 100 103 106 109, pve2 101 104 107 110, pve3 102 105 108 111.
COOLDOWN = 20.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # A 2 s Proxmox timeout (slow = 3 s), Alertmanager repeating every 3 s so that refusals are looked at
    # again, and a cooldown long enough to resolve an alert before a second attempt could start.
    with whole_stack(tmp_path_factory.mktemp("reliability-pve"), cluster={"timeout": "2s"}, repeat_interval="3s",
                     policy={"cooldown": f"{COOLDOWN:g}s", "max_cooldown": "1m", "retry_interval": "2s",
                             "task_timeout": "20s"}) as running:
        yield running


class Alerts:
    """VMHung alerts a test gave to Alertmanager or the webhook; all resolved when the test ends."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.open: dict[int, tuple[str, dict[str, str]]] = {}  # vmid -> (startsAt, labels), via Alertmanager
        self.direct: dict[int, str] = {}  # vmid -> startsAt, straight to the webhook

    def labels(self, vmid: int, node: str) -> dict[str, str]:
        return {"alertname": "VMHung", "action": "reset", "severity": "critical", "cluster": self.stack.cluster,
                "vmid": str(vmid), "node": node}

    def fire(self, vmid: int, node: str) -> None:
        """What Prometheus sends once VMHung fired for the guest; Alertmanager repeats it every 3 s."""
        starts_at = datetime.now(UTC).isoformat()
        self.open[vmid] = (starts_at, self.labels(vmid, node))
        self._post_am([{"labels": self.labels(vmid, node), "startsAt": starts_at,
                        "annotations": {"summary": "reliability test"}}])

    def fire_at_webhook(self, vmid: int, node: str) -> requests.Response:
        """A notification Alertmanager had already sent when the fault began."""
        starts_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self.direct[vmid] = starts_at
        return self._post_webhook(vmid, node, starts_at, "firing")

    def resolve(self, *vmids: int) -> None:
        """What Prometheus sends once the guest reports again; waits for the webhook to close the incident
        (an alert still firing after the cooldown would rightly get a second attempt)."""
        now = datetime.now(UTC).isoformat()
        ending = [(vmid, self.open.pop(vmid)) for vmid in vmids if vmid in self.open]
        if ending:
            self._post_am([{"labels": labels, "startsAt": starts_at, "endsAt": now} for _, (starts_at, labels)
                           in ending])
        direct = [(vmid, self.direct.pop(vmid)) for vmid in vmids if vmid in self.direct]
        for vmid, starts_at in direct:
            self._post_webhook(vmid, "", starts_at, "resolved")
        for vmid in vmids:
            # Prometheus' own VMHung for the same guest (same labels) can keep Alertmanager's alert firing
            # until the guest's heartbeats are fresh again in the rules: allow for that, bounded.
            try:
                wait_for(lambda vmid=vmid: history(self.stack, vmid, "resolved"), 90,
                         f"the webhook to close the incident of guest {vmid}")
            except TimeoutError as exc:
                am = requests.get(f"{self.stack.urls['alertmanager']}/api/v2/alerts", timeout=10).json()
                mine = [(a["labels"], a["startsAt"], a["endsAt"], a["status"]) for a in am
                        if a["labels"].get("vmid") == str(vmid)]
                raise AssertionError(f"{exc}\nalertmanager: {mine}\n{describe(self.stack)}\n"
                                     f"webhook events: {received(self.stack, vmid)}") from None

    def resolve_all(self) -> None:
        self.resolve(*self.open, *self.direct)

    def _post_am(self, body: list[dict[str, Any]]) -> None:
        reply = requests.post(f"{self.stack.urls['alertmanager']}/api/v2/alerts", json=body, timeout=10)
        assert reply.status_code == 200, reply.text

    def _post_webhook(self, vmid: int, node: str, starts_at: str, status: str) -> requests.Response:
        labels = {"cluster": self.stack.cluster, **({"node": node} if node else {})}
        body = firing(vmid, starts_at=starts_at, status=status, **labels)
        body["alerts"][0]["fingerprint"] = f"reliability{vmid}"
        if status == "resolved":
            body["alerts"][0]["endsAt"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        return requests.post(f"{self.stack.urls['webhook']}/alerts", json=body,
                             headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}, timeout=10)


@pytest.fixture
def fired(stack: Stack) -> Iterator[Alerts]:
    """The test's alerts, resolved afterwards, and every simulator fault switched off (also on failure)."""
    given = Alerts(stack)
    try:
        yield given
    finally:
        stack.sim.heal()
        given.resolve_all()


def received(stack: Stack, vmid: int) -> list[tuple[Any, ...]]:
    """What the webhook recorded of the guest's alerts, read from its SQLite database."""
    with sqlite3.connect(stack.workdir / "webhook.db") as db:
        return db.execute("SELECT fingerprint, starts_at, status, state, result, deliveries FROM webhook_event"
                          " WHERE vmid = ? ORDER BY id", (vmid,)).fetchall()


def outcomes(stack: Stack, vmid: int) -> list[str]:
    return [row["outcome"] for row in reversed(history(stack, vmid))]


def wait_outcome(stack: Stack, vmid: int, outcome: str, seconds: float = 40) -> dict[str, Any]:
    """The newest history row of `vmid` with `outcome` (or starting with it), waiting for it."""
    def found() -> dict[str, Any] | None:
        return next((r for r in history(stack, vmid) if r["outcome"].startswith(outcome)), None)
    try:
        return wait_for(found, seconds, f"{outcome} for guest {vmid}", interval=0.3)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{describe(stack)}") from None


def node_of(upid: str) -> str:
    return upid.split(":")[1]


def observe(stack: Stack, start: float, *vmids: int, **extra: Any) -> None:
    """Print what the test saw (`pytest -s`), for docs/reliability.md: the webhook's outcomes per guest,
    oldest first, and the reset tasks the simulator received (vmid@node)."""
    seen = {vmid: outcomes(stack, vmid) for vmid in vmids}
    tasks = [f"{t['vmid']}@{node_of(t['upid'])}" for t in tasks_since(stack, start)]
    notes = "".join(f"; {key}: {value}" for key, value in extra.items())
    print(f"\nobserved: outcomes {seen}; reset tasks {tasks}{notes}")


# --- Proxmox faults while polling ----------------------------------------------------------------

def poll_error(stack: Stack) -> str:
    """The exporter's last poll error for the cluster ('' after a good poll), from GET /api/status."""
    status = requests.get(f"{stack.urls['exporter']}/api/status", timeout=10).json()["clusters"][stack.cluster]
    return "" if status["up"] else status["error"]


def test_proxmox_down_slow_or_refusing_while_polling_raises_api_down_and_never_resets(stack: Stack,
                                                                                      fired: Alerts) -> None:
    """A guest hangs as Proxmox goes down (500); then Proxmox is slow instead (3 s, beyond the 2 s
    timeout); then it refuses the exporter's token (403: the ACL removed). Each next fault is switched
    on before the last one is switched off, so no poll succeeds in between. Throughout, the guest's
    heartbeat is stale but the rules must not call it hung: ProxmoxAPIDown fires instead, and nothing is
    reset. When Proxmox answers again, the guest (still hung) is reset exactly once."""
    settled(stack)
    wait_for(lambda: not alerts(stack, "ProxmoxAPIDown") and poll_error(stack) == "", 60,
             "Proxmox to be reachable and ProxmoxAPIDown gone", interval=0.5)
    vmid, start = 100, time.time()
    stack.sim.api_down(500)
    stack.sim.hang(vmid)
    wait_for(lambda: alerts(stack, "ProxmoxAPIDown", "firing"), 60, "ProxmoxAPIDown to fire", interval=0.5)
    api_down_after = time.time() - start
    assert [float(r["value"][1]) for r in stack.query("vmhealth_pve_up")] == [0.0]
    errors = [poll_error(stack)]
    assert "HTTP 500" in errors[0]

    stack.sim.latency(3.0)
    stack.sim.api_up()
    wait_for(lambda: "no answer from Proxmox" in poll_error(stack), 30, "the poll to time out", interval=0.5)
    errors.append(poll_error(stack))
    stack.sim.revoke_audit()
    stack.sim.latency(0)
    wait_for(lambda: "HTTP 403" in poll_error(stack), 30, "the poll to be refused", interval=0.5)
    errors.append(poll_error(stack))
    # Long enough for VMHung to have been pending had the rules judged the stale guest hung.
    s = stack.settings
    last = stack.sim.guest(vmid)["agent_last_heartbeat"]
    time.sleep(max(0.0, last + parse_duration(s.stale_timeout) + 3 * parse_duration(s.evaluation_interval)
                   + parse_duration(s.scrape_interval) - time.time()))
    assert stack.sim.guest(vmid)["hung"] and alerts(stack, "ProxmoxAPIDown", "firing")
    failed_polls = sum(float(r["value"][1]) for r in stack.query("increase(vmhealth_pve_poll_errors_total[1m])"))
    assert failed_polls >= 3, failed_polls  # one per error seen above at least; polls every 2 s (4 s while slow)
    assert vmid not in ever_alerted(stack, "VMHung", time.time() - start), describe(stack)
    assert tasks_since(stack, start) == [] and history(stack, vmid) == [], describe(stack)

    stack.sim.restore_audit()  # Proxmox answers again; the guest is still hung
    task = wait_for(lambda: tasks_since(stack, start, vmid), 90, f"the reset of guest {vmid}", interval=0.5)[0]
    wait_for(lambda: history(stack, vmid, "resolved"), 60, f"VMHung of guest {vmid} to resolve")
    assert [t["upid"] for t in tasks_since(stack, start)] == [task["upid"]], describe(stack)
    assert [r["outcome"] for r in history(stack, vmid) if not r["outcome"].startswith("skipped")] == [
        "resolved", "success"]
    observe(stack, start, vmid, ProxmoxAPIDown_firing_after=f"{api_down_after:.1f}s",
            silent_before_the_reset=f"{task['requested_at'] - last:.1f}s", poll_errors=[e[:60] for e in errors],
            failed_polls_in_a_minute=f"{failed_polls:.1f}")


# --- Proxmox faults during a reset -----------------------------------------------------------------

def test_proxmox_answering_5xx_to_the_reset_is_unknown_then_retried_once(stack: Stack, fired: Alerts) -> None:
    """The reset POST gets a 503 (reads still work): the attempt is `unknown`, the node's task list
    shows no reset, and nothing is sent again until the cooldown ends; then one reset succeeds."""
    vmid, start = 101, time.time()
    stack.sim.hang(vmid)
    stack.sim.api_down(503, method="POST")
    fired.fire(vmid, "pve2")
    row = wait_outcome(stack, vmid, "unknown")
    assert "503" in row["error"] and "no reset task on pve2" in row["error"], row
    assert tasks_since(stack, start) == []
    stack.sim.api_up()
    time.sleep(COOLDOWN / 3)
    assert tasks_since(stack, start) == [], "a second attempt came before the cooldown ended"
    success = wait_outcome(stack, vmid, "success", COOLDOWN + 30)
    [task] = tasks_since(stack, start)
    assert task["upid"] == success["upid"] and task["exitstatus"] == "OK" and success["attempt"] == 2
    # Another alert for the guest joins the incident; deciding it looks attempt 1 up again, and the
    # task it finds then is attempt 2's, not attempt 1's.
    assert fired.fire_at_webhook(vmid, "pve2").status_code == 200
    wait_for(lambda: outcomes(stack, vmid)[-1].startswith("skipped"), 20, "the next alert to be decided")
    assert [o for o in outcomes(stack, vmid) if not o.startswith("skipped")] == ["unknown", "success"]
    gap = datetime.fromisoformat(success["time"]) - datetime.fromisoformat(row["time"])
    observe(stack, start, vmid, second_attempt_after=f"{gap.total_seconds():.1f}s")


def test_proxmox_down_when_the_webhook_acts_is_refused_then_one_reset(stack: Stack, fired: Alerts) -> None:
    """Every call answers 500 as the alert arrives: the webhook cannot read the guest's state, so it
    refuses (`proxmox-unreachable`), looks again at each repeat, and resets once Proxmox is back."""
    vmid, start = 109, time.time()
    stack.sim.hang(vmid)
    stack.sim.api_down(500)
    fired.fire(vmid, "pve1")
    wait_for(lambda: outcomes(stack, vmid).count("skipped:proxmox-unreachable") >= 2, 30,
             "two refusals while Proxmox is down")
    assert "HTTP 500" in history(stack, vmid)[0]["error"] and tasks_since(stack, start) == []
    stack.sim.api_up()  # before ProxmoxAPIDown (10 s here) could fire and inhibit the alert
    row = wait_outcome(stack, vmid, "success")
    assert [t["upid"] for t in tasks_since(stack, start)] == [row["upid"]] and row["attempt"] == 1
    observe(stack, start, vmid)


def test_a_reset_that_outlives_the_timeout_is_found_in_the_task_list_not_sent_again(stack: Stack,
                                                                                   fired: Alerts) -> None:
    """The reset POST takes 3 s, the client gives up after 2 s, Proxmox carries it out anyway: the
    webhook finds the task on the node and records its success; one reset."""
    vmid, start = 105, time.time()
    stack.sim.hang(vmid)
    stack.sim.latency(3.0, method="POST")
    fired.fire(vmid, "pve3")
    row = wait_outcome(stack, vmid, "success")
    [task] = tasks_since(stack, start)
    assert row["upid"] == task["upid"] and "found after" in row["error"] and "no answer" in row["error"], row
    assert row["attempt"] == 1 and not stack.sim.guest(vmid)["hung"]
    stack.sim.latency(0)
    time.sleep(3)  # an Alertmanager repeat comes meanwhile; the cooldown holds it off
    fired.resolve(vmid)  # it reports again
    assert len(tasks_since(stack, start)) == 1 and outcomes(stack, vmid).count("success") == 1
    observe(stack, start, vmid, detail=row["error"][:90])


def test_a_revoked_power_privilege_fails_the_attempt_and_sends_nothing(stack: Stack, fired: Alerts) -> None:
    """403 on the reset: a `failed` attempt with Proxmox's message, no task, the webhook still serving."""
    vmid, start = 107, time.time()
    stack.sim.hang(vmid)
    stack.sim.revoke_power()
    fired.fire(vmid, "pve2")
    row = wait_outcome(stack, vmid, "failed")
    assert "403" in row["error"] and "VM.PowerMgmt" in row["error"] and row["attempt"] == 1, row
    time.sleep(3)
    assert tasks_since(stack, start) == [] and outcomes(stack, vmid).count("failed") == 1
    assert requests.get(f"{stack.urls['webhook']}/healthz", timeout=5).status_code == 200
    observe(stack, start, vmid, detail=row["error"][:90])


def test_no_quorum_is_refused_until_quorum_returns_then_one_reset(stack: Stack, fired: Alerts) -> None:
    """Without quorum nothing is reset; each repeat is looked at again (refused, recorded), and the
    first one after quorum returns resets the guest, once."""
    vmid, start = 110, time.time()
    stack.sim.hang(vmid)
    stack.sim.quorum(False)
    wait_for(lambda: [float(r["value"][1]) for r in stack.query("vmhealth_pve_cluster_quorate")] == [0.0], 30,
             "the exporter to report the lost quorum")
    fired.fire(vmid, "pve2")
    wait_for(lambda: outcomes(stack, vmid).count("skipped:no-quorum") >= 2, 40, "two refusals for lack of quorum")
    assert tasks_since(stack, start) == []
    stack.sim.quorum(None)
    row = wait_outcome(stack, vmid, "success")
    assert [t["upid"] for t in tasks_since(stack, start)] == [row["upid"]] and row["attempt"] == 1
    observe(stack, start, vmid)


def test_a_node_lost_after_the_alert_resets_none_of_its_guests(stack: Stack, fired: Alerts) -> None:
    """The node goes offline while the notification is on its way: refused as node-offline, no task;
    the exporter reports the node down. (ProxmoxNodeDown firing and its guests never reset is also
    tests/e2e/test_remediation.py::test_stopped_locked_paused_and_offline_node_guests_are_never_reset.)"""
    vmid, start = 111, time.time()
    stack.sim.hang(vmid)
    stack.sim.node_offline("pve3")
    reply = fired.fire_at_webhook(vmid, "pve3")
    assert reply.status_code == 200, reply.text
    row = wait_outcome(stack, vmid, "skipped:node-offline")
    assert "pve3" in row["error"]
    wait_for(lambda: [float(r["value"][1]) for r in stack.query('vmhealth_pve_node_up{node="pve3"}')] == [0.0],
             30, "the exporter to report pve3 down")
    assert tasks_since(stack, start) == []
    observe(stack, start, vmid)


def test_a_guest_migrated_after_the_alert_is_reset_on_its_new_node_only(stack: Stack, fired: Alerts) -> None:
    """The alert says pve1; by the time the webhook acts the guest runs on pve2. Then a second guest is
    still migrating (migrate lock for 10 s) when its alert arrives: left alone, then reset on its new node."""
    moved, moving, start = 103, 106, time.time()
    stack.sim.hang(moved)
    stack.sim.migrate(moved, "pve2")
    fired.fire(moved, "pve1")
    row = wait_outcome(stack, moved, "success")
    [task] = tasks_since(stack, start)
    assert node_of(task["upid"]) == "pve2" and row["node"] == "pve2" and task["vmid"] == moved, (task, row)
    fired.resolve(moved)  # it reports again

    stack.sim.hang(moving)
    stack.sim.migrate(moving, "pve3", seconds=10)  # outlasts the first delivery on a loaded machine
    fired.fire(moving, "pve1")
    refused = wait_outcome(stack, moving, "skipped:locked")
    assert "migrate" in refused["error"]
    row = wait_outcome(stack, moving, "success", 40)
    tasks = tasks_since(stack, start)
    assert sorted((t["vmid"], node_of(t["upid"])) for t in tasks) == [(moved, "pve2"), (moving, "pve3")], tasks
    assert row["node"] == "pve3"
    observe(stack, start, moved, moving)
