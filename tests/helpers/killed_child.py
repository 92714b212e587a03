"""A webhook app in a child process that is SIGKILLed when it reaches a marked moment of its work."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import json, re, sys, time
    import responses
    from tests.helpers.webhook import FakePve, auth, firing, make_config
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
