"""A webhook killed with SIGKILL at the worst moments: the next process completes the work once.

The first process is a real subprocess (its own interpreter, database connections and threads);
it is killed either after recording the alert but before acting, or after sending the reset but
before learning its outcome.
"""

from __future__ import annotations

import time
from typing import Any

from tests.helpers.killed_child import run_child_until
from tests.helpers.webhook import ADMIN, FakePve, auth, firing, make_config
from vmhealth.webhook import create_app


def restart(url: str) -> Any:
    app = create_app(make_config(url, {"claim_lease": "1s"}), task_poll_interval=0.01, settle=0.05, worker_poll=0.05)
    return app


def test_killed_between_record_and_act_completes_once_after_restart(database: str, pve: FakePve) -> None:
    assert run_child_until(database, "before-act", "recorded") == "recorded 200"
    app = restart(database)
    try:
        assert app.extensions["vmhealth"].worker.drain(30)
        assert pve.resets(100) == 1
        # Alertmanager repeats the notification: still once.
        app.test_client().post("/alerts", json=firing(100), headers=auth())
        assert app.extensions["vmhealth"].worker.drain(30)
        assert pve.resets(100) == 1
        [row] = app.test_client().get("/api/resets?vmid=100", headers=auth(ADMIN)).get_json()["resets"]
        assert row["outcome"] == "success"
    finally:
        app.extensions["vmhealth"].close()


def test_killed_after_sending_the_reset_does_not_reset_again(database: str, pve: FakePve) -> None:
    line = run_child_until(database, "mid-action", "posted")
    upid = line.split()[1]
    # The reset the killed process sent did happen: Proxmox's task list shows it.
    pve.tasks[upid] = {"upid": upid, "node": "pve1", "type": "qmreset", "id": "100", "starttime": int(time.time()),
                       "status": "stopped", "exitstatus": "OK"}
    time.sleep(1.2)  # the dead process's claim lease (1 s) runs out
    app = restart(database)
    try:
        client = app.test_client()
        client.post("/alerts", json=firing(100), headers=auth())
        ctx = app.extensions["vmhealth"]
        assert ctx.worker.drain(30)
        assert pve.resets(100) == 0
        rows = client.get("/api/resets?vmid=100", headers=auth(ADMIN)).get_json()["resets"]
        attempt = [r for r in rows if r["attempt"] == 1]
        assert len(attempt) == 1 and attempt[0]["outcome"] == "success" and attempt[0]["upid"] == upid
        assert all(r["attempt"] in (None, 1) for r in rows)
    finally:
        app.extensions["vmhealth"].close()
