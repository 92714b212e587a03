"""A webhook killed after its reset POST, whose alert then resolves before the claim lease runs out:
the interrupted attempt must still be settled from the node's task list, and must not count as an
action in flight for ever (two such would leave `max_concurrent_actions` full: every later alert
`skipped:busy`). The killed process is a real subprocess, as in tests/webhook/test_restart.py.
"""

from __future__ import annotations

import time
from typing import Any

from tests.helpers.killed_child import run_child_until
from tests.helpers.webhook import ADMIN, FakePve, auth, firing, make_config
from vmhealth.stack.processes import wait_for
from vmhealth.webhook import create_app


def test_attempt_interrupted_then_resolved_is_settled(database: str, pve: FakePve) -> None:
    line = run_child_until(database, "mid-action", "posted")
    upid = line.split()[1]
    pve.tasks[upid] = {"upid": upid, "node": "pve1", "type": "qmreset", "id": "100", "starttime": int(time.time()),
                       "status": "stopped", "exitstatus": "OK"}
    config = make_config(database, {"claim_lease": "1s"})
    receiver = create_app(config, start_worker=False)
    try:  # the guest came back and Alertmanager says so, before anyone took the dead process's claim over
        reply = receiver.test_client().post("/alerts", json=firing(100, status="resolved"), headers=auth())
        assert reply.status_code == 200
    finally:
        receiver.extensions["vmhealth"].close()
    app = create_app(config, task_poll_interval=0.01, settle=0.05, worker_poll=0.05)
    ctx = app.extensions["vmhealth"]
    try:
        def attempt() -> dict[str, Any] | None:
            rows = [r for r in app.test_client().get("/api/resets?vmid=100", headers=auth(ADMIN)).get_json()["resets"]
                    if r["attempt"] == 1]
            return rows[0] if rows and rows[0]["outcome"] != "pending" else None

        row = wait_for(attempt, 30, "the interrupted attempt to be settled")
        assert (row["outcome"], row["upid"]) == ("success", upid)
        assert ctx.store.history.in_flight() == 0
        assert pve.resets(100) == 0  # nothing sent again
    finally:
        ctx.close()
