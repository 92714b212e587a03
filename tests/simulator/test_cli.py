"""`vmhealth sim` as a process (what the demo and benchmarks start) and `vmhealth sim ctl` steering it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

from vmhealth.cli import main
from vmhealth.simulator.testing import running_simulator


def ctl(sim_url: str, ca: str, *words: str) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "vmhealth", "sim", "ctl", "--url", sim_url, "--ca-bundle", ca,
                           *words], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


def test_subprocess_simulator_steered_by_ctl() -> None:
    with running_simulator(nodes=2, guests=4, lxc=1, subprocess=True) as sim:
        url = f"https://{sim.host}"
        code, out, err = ctl(url, sim.ca_bundle, "hang", "101")
        assert code == 0, err
        assert json.loads(out)["hung"] is True
        current = requests.get(f"{sim.base_url}/nodes/pve2/qemu/101/status/current", headers=sim.auth_header(),
                               verify=sim.ca_bundle, timeout=10).json()["data"]
        assert current["status"] == "running"
        code, out, _ = ctl(url, sim.ca_bundle, "lock", "100", "snapshot")
        assert json.loads(out)["lock"] == "snapshot"
        code, out, _ = ctl(url, sim.ca_bundle, "node-offline", "pve2")
        assert json.loads(out) == {"node": "pve2", "online": False, "quorate": False}
        state = json.loads(ctl(url, sim.ca_bundle, "state")[1])
        assert state["nodes"]["pve2"]["online"] is False and {g["vmid"] for g in state["faulty_guests"]} == {100, 101}
        code, out, err = ctl(url, sim.ca_bundle, "hang", "4242")
        assert code == 1 and "no guest 4242" in err
        audit = requests.post(f"{sim.base_url}/nodes/pve1/qemu/100/status/reset", headers=sim.auth_header("audit"),
                              verify=sim.ca_bundle, timeout=10)
        assert audit.status_code == 403


def test_ctl_explains_an_unreachable_simulator_and_a_bad_ca_file(port: int) -> None:
    done = subprocess.run([sys.executable, "-m", "vmhealth", "sim", "ctl", "--url", f"https://127.0.0.1:{port}",
                           "state"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and f"simulator at https://127.0.0.1:{port} not reachable" in done.stderr
    code, _, err = ctl(f"https://127.0.0.1:{port}", __file__, "state")
    assert code == 1 and f"cannot use {__file__} as the CA bundle" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sim", "--listen", "nowhere"], "is not HOST:PORT"),
        (["sim", "--token", "no-equals-sign"], "is not NAME=SECRET"),
        (["sim", "--boot-time", "soon"], "--boot-time"),
        (["sim", "ctl", "quorum", "maybe"], "invalid choice"),
    ],
)
def test_bad_flags_are_named(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_token_id_is_refused_at_start(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--listen", "127.0.0.1:0", "--token-id", "no-bang"]) == 2
    assert "is not USER@REALM!TOKENID" in capsys.readouterr().err
