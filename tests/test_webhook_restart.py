"""A webhook killed with SIGKILL at the worst moments: the next process completes the work once.

The first process is a real subprocess (its own interpreter, database connections and threads);
it is killed either after recording the alert but before acting, or after sending the reset but
before learning its outcome.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

from tests.test_webhook_support import ADMIN, FakePve, auth, firing, make_config
from vmhealth.webhook import create_app

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent("""
    import json, re, sys, time
    import responses
    from tests.test_webhook_support import FakePve, auth, firing, make_config
    from vmhealth.webhook import create_app

    url, mode = sys.argv[1], sys.argv[2]
    mock = responses.RequestsMock(assert_all_requests_are_fired=False)
    mock.start()
    pve = FakePve(mock)
    for vmid in range(900, 910):
        pve.add(vmid, status="stopped", uptime=0)
    pve.add(100)
    original = pve.post

    def post_then_hang(request):
        status, headers, body = original(request)
        print("posted " + json.loads(body)["data"], flush=True)
        time.sleep(3600)
        return status, headers, body

    mock.reset()
    mock.add_callback(responses.GET, re.compile(".*"), callback=pve.get)
    mock.add_callback(responses.POST, re.compile(".*"), callback=post_then_hang)
    app = create_app(make_config(url, {"claim_lease": "1s"}), start_worker=(mode == "mid-action"),
                     task_poll_interval=0.01, settle=0.05, worker_poll=0.05)
    response = app.test_client().post("/alerts", json=firing(100), headers=auth())
    print(f"recorded {response.status_code}", flush=True)
    time.sleep(3600)
""")


def run_child_until(url: str, mode: str, marker: str, timeout: float = 60) -> str:
    """Start the child, wait for the line starting with `marker`, SIGKILL it; the line is returned."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, url, mode], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    found = None
    try:
        deadline = time.monotonic() + timeout
        while found is None and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                line = proc.stdout.readline()
                if line.startswith(marker):
                    found = line.strip()
                elif not line:
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        errors = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    if found is None:
        raise AssertionError(f"the child never printed {marker!r}; its stderr:\n{errors[-3000:]}")
    return found


@pytest.fixture
def pve() -> Iterator[FakePve]:
    mock = responses.RequestsMock(assert_all_requests_are_fired=False)
    mock.start()
    fake = FakePve(mock)
    for vmid in range(900, 910):
        fake.add(vmid, status="stopped", uptime=0)
    fake.add(100)
    try:
        yield fake
    finally:
        mock.stop()
        mock.reset()



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
