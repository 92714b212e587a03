"""The agent as an operator runs it: real agent processes (Python and shell) pushing to a real
`vmhealth exporter` process on loopback, which polls the Proxmox simulator over HTTPS."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vmhealth.keys import derive_vm_key
from vmhealth.stack.launcher import Child, clean_env, vmhealth_command
from vmhealth.stack.processes import free_port

pytestmark = pytest.mark.slow

API_KEY = "agent-test-shared-key"
AGENT_SH = Path(__file__).resolve().parents[2] / "agent" / "linux-agent.sh"


def http_get(url: str, headers: dict[str, str] | None = None, context: Any = None) -> str:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5, context=context) as reply:
        return reply.read().decode()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30, logs: Callable[[], str] = str) -> Any:
    """The first truthy `check()` within `timeout` seconds, or fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout}s\n{logs()}")


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A one-node Proxmox simulator; yields its cluster config and each guest's smbios1 line."""
    import ssl

    from vmhealth.simulator.launch import SimOptions, build

    folder = tmp_path_factory.mktemp("sim")
    sim, files = build(SimOptions(nodes=1, guests=4, port=0, cluster_name="lab", cert_dir=str(folder),
                                  token_id="monitor@pve!vmhealth", token_secret="sim-secret"))
    sim.start()
    try:
        host, port = sim.address
        base = f"https://{host}:{port}/api2/json"
        auth = {"Authorization": "PVEAPIToken=monitor@pve!vmhealth=sim-secret"}
        context = ssl.create_default_context(cafile=str(files.ca))
        guests = json.loads(http_get(f"{base}/cluster/resources?type=vm", auth, context))["data"]
        smbios = {}
        for guest in guests:
            config = json.loads(http_get(f"{base}/nodes/{guest['node']}/qemu/{guest['vmid']}/config", auth, context))
            smbios[int(guest["vmid"])] = config["data"]["smbios1"]
        cluster = {"name": "lab", "host": f"{host}:{port}", "token_id": "monitor@pve!vmhealth",
                   "token_secret": "sim-secret", "ca_bundle": str(files.ca)}
        yield {"cluster": cluster, "smbios": smbios}
    finally:
        sim.stop()


class Exporter(Child):
    """`vmhealth exporter` as a subprocess on a fixed port, restartable."""

    def __init__(self, folder: Path, cluster: dict[str, Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "exporter.log"
        self.config = folder / "exporter.json"
        self.config.write_text(json.dumps({
            "clusters": [cluster],
            "exporter": {"listen": f"127.0.0.1:{self.port}", "api_key": API_KEY, "poll_interval": "1s",
                         "flush_interval": "1s", "database_url": f"sqlite:///{folder}/exporter.db"},
        }))
        super().__init__("exporter", vmhealth_command("exporter", self.config), self.log, f"{self.url}/metrics",
                         clean_env())

    def start(self, timeout: float = 30) -> None:
        super().start(timeout)

    def heartbeat(self, vmid: int) -> float | None:
        """The exporter's vmhealth_heartbeat_timestamp_seconds of guest `vmid` in cluster lab, if any."""
        pattern = re.compile(r'^vmhealth_heartbeat_timestamp_seconds\{([^}]*)\} (\S+)$')
        for line in http_get(f"{self.url}/metrics").splitlines():
            match = pattern.match(line)
            if match and 'cluster="lab"' in match.group(1) and f'vmid="{vmid}"' in match.group(1):
                return float(match.group(2))
        return None


@pytest.fixture
def exporter(tmp_path: Path, simulator: dict[str, Any]) -> Iterator[Exporter]:
    server = Exporter(tmp_path, simulator["cluster"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


def start_agent(tmp_path: Path, name: str, **env: str) -> tuple[Child, Path]:
    agent = Child(name, [sys.executable, "-m", "vmhealth.agent"], tmp_path / f"{name}.log", None,
                  clean_env(VMHEALTH_AGENT_INTERVAL="1s", VMHEALTH_AGENT_TIMEOUT="1s", **env))
    agent.start()
    return agent, agent.log_path


def test_agent_identified_by_smbios_uuid_reports_and_survives_an_exporter_restart(
    tmp_path: Path, simulator: dict[str, Any], exporter: Exporter
) -> None:
    vmid, smbios1 = sorted(simulator["smbios"].items())[0]
    # As Proxmox writes it in the VM config, and as Windows shows it to the guest (upper case).
    uuid = smbios1.split("uuid=", 1)[1].split(",", 1)[0].upper()
    agent, log = start_agent(tmp_path, "agent", VMHEALTH_AGENT_EXPORTER_URL=exporter.url,
                             VMHEALTH_AGENT_API_KEY=derive_vm_key(API_KEY, "lab", vmid), VMHEALTH_AGENT_UUID=uuid,
                             VMHEALTH_AGENT_CLUSTER="lab")
    try:
        first = wait_for(f"a heartbeat of vmid {vmid} found by UUID", lambda: exporter.heartbeat(vmid),
                         logs=lambda: log.read_text() + exporter.log.read_text())
        page = http_get(f"{exporter.url}/metrics")
        assert re.search(rf'vmhealth_guest_memory_total_bytes\{{[^}}]*vmid="{vmid}"[^}}]*\}} [1-9]', page)
        assert re.search(rf'vmhealth_guest_uptime_seconds\{{[^}}]*vmid="{vmid}"', page)

        exporter.stop()
        time.sleep(3)  # several intervals with the exporter gone
        assert agent.running, log.read_text()
        exporter.start()
        wait_for("a heartbeat after the restart", lambda: (exporter.heartbeat(vmid) or 0) > first + 3,
                 logs=log.read_text)
        wait_for("the recovery logged", lambda: "accepts reports again" in log.read_text(), logs=log.read_text)
        assert agent.running
    finally:
        agent.stop()
    text = log.read_text()
    assert agent.process.returncode == 0, text
    assert text.count("unreachable") == 1, text  # a state change, logged once for many failed attempts
    assert API_KEY not in text and derive_vm_key(API_KEY, "lab", vmid) not in text


def test_a_wrong_key_is_logged_once_and_clearly(tmp_path: Path, exporter: Exporter,
                                                 simulator: dict[str, Any]) -> None:
    vmid = sorted(simulator["smbios"])[1]
    agent, log = start_agent(tmp_path, "wrong", VMHEALTH_AGENT_EXPORTER_URL=exporter.url,
                             VMHEALTH_AGENT_API_KEY="not-the-exporters-key", VMHEALTH_AGENT_VMID=str(vmid))
    try:
        wait_for("the refusal logged", lambda: "refused" in log.read_text(), logs=log.read_text)
        time.sleep(3)  # more refused attempts
        assert agent.running
    finally:
        agent.stop()
    refusals = [line for line in log.read_text().splitlines() if "refused" in line]
    assert len(refusals) == 1, log.read_text()
    assert "(401)" in refusals[0] and "agent.api_key" in refusals[0] and "not-the-exporters-key" not in refusals[0]
    assert exporter.heartbeat(vmid) is None


@pytest.mark.skipif(not shutil.which("curl"), reason="the shell agent needs curl")
def test_shell_agent_payload_is_accepted(tmp_path: Path, exporter: Exporter, simulator: dict[str, Any]) -> None:
    vmid = sorted(simulator["smbios"])[2]
    log = tmp_path / "sh.log"
    env = clean_env(VMHEALTH_AGENT_EXPORTER_URL=exporter.url,
                    VMHEALTH_AGENT_API_KEY=derive_vm_key(API_KEY, "lab", vmid), VMHEALTH_AGENT_VMID=str(vmid),
                    VMHEALTH_AGENT_INTERVAL="1", VMHEALTH_AGENT_CLUSTER="lab")
    proc = Child("shell agent", ["sh", str(AGENT_SH), "--defaults", str(tmp_path / "absent")], log, None, env)
    proc.start()
    try:
        wait_for(f"a heartbeat of vmid {vmid} from the shell agent", lambda: exporter.heartbeat(vmid),
                 logs=lambda: log.read_text() + exporter.log.read_text())
        page = http_get(f"{exporter.url}/metrics")
        assert re.search(rf'vmhealth_guest_disk_total_bytes\{{[^}}]*vmid="{vmid}"[^}}]*\}} [1-9]', page)
        assert re.search(rf'vmhealth_guest_cpu_usage_ratio\{{[^}}]*vmid="{vmid}"', page)
    finally:
        proc.stop()
    assert "reporting to" in log.read_text()
    assert "refused" not in log.read_text()


def test_shell_agent_reports_to_every_exporter_while_one_is_down(tmp_path: Path, exporter: Exporter,
                                                                  simulator: dict[str, Any]) -> None:
    """VMHEALTH_AGENT_EXPORTER_URLS: the exporter that is up gets the reports, the one that is down is
    logged once, and a stop ends every loop."""
    vmid = sorted(simulator["smbios"])[3]
    dead = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "sh-pair.log"
    env = clean_env(VMHEALTH_AGENT_EXPORTER_URLS=f"{dead},{exporter.url}", VMHEALTH_AGENT_CLUSTER="lab",
                    VMHEALTH_AGENT_API_KEY=derive_vm_key(API_KEY, "lab", vmid), VMHEALTH_AGENT_VMID=str(vmid),
                    VMHEALTH_AGENT_INTERVAL="1")
    proc = Child("shell agent", ["sh", str(AGENT_SH), "--defaults", str(tmp_path / "absent")], log, None, env)
    proc.start()
    try:
        first = wait_for(f"a heartbeat of vmid {vmid}", lambda: exporter.heartbeat(vmid),
                         logs=lambda: log.read_text() + exporter.log.read_text())
        wait_for("a later heartbeat", lambda: (exporter.heartbeat(vmid) or 0) > first + 1.5, logs=log.read_text)
    finally:
        proc.stop()
    assert proc.process.returncode == 0
    text = log.read_text()
    assert text.count(f"exporter {dead}/api/health/report unreachable") == 1, text
    assert f"reporting to {exporter.url}/api/health/report" in text


@pytest.mark.parametrize(("urls", "problem"), [
    ({"VMHEALTH_AGENT_EXPORTER_URL": "http://a:1", "VMHEALTH_AGENT_EXPORTER_URLS": "http://b:1"}, "set both"),
    ({"VMHEALTH_AGENT_EXPORTER_URLS": "http://a:1, http://a:1/"}, "listed twice"),
    ({"VMHEALTH_AGENT_EXPORTER_URLS": "http://a:1 ftp://b"}, "'ftp://b' is not http:// or https://"),
])
def test_shell_agent_refuses_a_bad_exporter_list(tmp_path: Path, urls: dict[str, str], problem: str) -> None:
    done = subprocess.run(["sh", str(AGENT_SH), "--defaults", str(tmp_path / "absent")], capture_output=True,
                          text=True, timeout=30, env=clean_env(VMHEALTH_AGENT_API_KEY="k" * 16, **urls))
    assert done.returncode == 2 and problem in done.stderr, done.stderr


def test_shell_agent_once_matches_the_python_agents_fields(tmp_path: Path) -> None:
    env = clean_env(VMHEALTH_AGENT_VMID="100")
    shell_agent = ["sh", str(AGENT_SH), "--once", "--defaults", str(tmp_path / "absent")]
    shell = json.loads(subprocess.run(shell_agent, capture_output=True, text=True, timeout=30, env=env,
                                      check=True).stdout)
    python = json.loads(subprocess.run([sys.executable, "-m", "vmhealth.agent", "--once"], capture_output=True,
                                       text=True, timeout=30, env=env, check=True).stdout)
    assert set(python) - {"uuid"} <= set(shell), set(python) - set(shell)
    assert shell["vmid"] == "100" and 0 <= shell["cpuUsage"] <= 100
    assert shell["memTotalBytes"] == python["memTotalBytes"]
    assert shell["diskTotalBytes"] == python["diskTotalBytes"]


def test_pull_mode_process_serves_promtool_valid_metrics(tmp_path: Path, promtool: str) -> None:
    port = free_port()
    agent, log = start_agent(tmp_path, "pull", VMHEALTH_AGENT_MODE="pull", VMHEALTH_AGENT_LISTEN=f"127.0.0.1:{port}",
                             VMHEALTH_AGENT_VMID="123")
    try:
        page = wait_for("/metrics served", lambda: http_get(f"http://127.0.0.1:{port}/metrics"), logs=log.read_text)
    finally:
        agent.stop()
    assert 'vmid="123"' in page and "vmhealth_agent_memory_total_bytes" in page
    done = subprocess.run([promtool, "check", "metrics"], input=page, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr
    assert agent.process.returncode == 0, log.read_text()
