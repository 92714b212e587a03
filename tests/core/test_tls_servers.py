"""HTTPS on the real `vmhealth exporter` (gunicorn, the guarded worker): verified against a private CA,
mutual TLS refusing a missing or foreign client certificate with the reason in the log, handshakes
that stall costing no thread, and certificates rotated without a restart.

Cost: about 25 s (a gunicorn process per group of tests).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tests.helpers.servers import AGENT_KEY, Served, exporter_config, serve
from tests.helpers.tls import Pki, make_pki, reissue
from vmhealth.agent.push import Pusher
from vmhealth.agent.server import MetricsServer
from vmhealth.simulator.testing import running_simulator
from vmhealth.stack.launcher import Child, clean_env
from vmhealth.stack.processes import free_port, wait_for
from vmhealth.tls import ServerFiles, reloading_server_context

pytestmark = pytest.mark.slow
AGENT_SH = Path(__file__).resolve().parents[2] / "agent" / "linux-agent.sh"
REPORT = {"hostname": "vm100", "vmid": "100", "cpuUsage": 1}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_section(pki: Pki, folder: Path, client_ca: bool) -> dict[str, str]:
    """The exporter's tls_* keys, on copies of the server pair (so that a test can rotate them)."""
    cert, key = folder / "server.crt", folder / "server.key"
    shutil.copy(pki.server.cert, cert)
    shutil.copy(pki.server.key, key)
    section = {"tls_cert_file": str(cert), "tls_key_file": str(key)}
    if client_ca:
        section["tls_client_ca_file"] = str(pki.ca)
    return section


@pytest.fixture(scope="module")
def mutual(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("mutual")
    with running_simulator(nodes=1, guests=2) as sim, \
            serve("exporter", exporter_config(sim, folder, **tls_section(pki, folder, client_ca=True)), folder,
                  tls={"verify": str(pki.ca), "cert": (str(pki.client.cert), str(pki.client.key))}) as served:
        yield served


def test_mutual_tls_serves_a_client_of_the_ca_and_refuses_others_saying_why(mutual: Served, pki: Pki) -> None:
    good = {"verify": str(pki.ca), "cert": (str(pki.client.cert), str(pki.client.key))}
    reply = requests.post(f"{mutual.url}/api/health/report", json=REPORT, headers={"X-API-Key": AGENT_KEY},
                          timeout=10, **good)
    assert reply.status_code == 200, reply.text
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        requests.get(f"{mutual.url}/healthz", timeout=10, verify=str(pki.other_ca),
                     cert=good["cert"])  # the client does not trust the server's CA
    for cert in (None, (str(pki.stranger.cert), str(pki.stranger.key))):
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"{mutual.url}/healthz", timeout=10, verify=str(pki.ca), cert=cert)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(mutual.url.replace("https:", "http:") + "/healthz", timeout=10)
    wait_for(lambda: "peer did not return a certificate" in mutual.output()
             and "certificate verify failed" in mutual.output(), 10, "the refusals in the log")
    lines = [line for line in mutual.output().splitlines() if "TLS handshake" in line]
    assert any("127.0.0.1" in line and "peer did not return a certificate" in line for line in lines), lines
    page = requests.get(f"{mutual.url}/metrics", timeout=10, **good).text
    refused = re.search(r'vmhealth_http_connections_refused_total\{reason="tls-handshake"\} (\S+)', page)
    assert refused and float(refused.group(1)) >= 4, page[:300]


def test_a_handshake_that_stalls_holds_no_thread(mutual: Served, pki: Pki) -> None:
    """Stock gthread does the handshake in a thread: 12 connections that send half a ClientHello
    held all 8 threads, and the next client waited until they were cut."""
    port = int(mutual.url.rsplit(":", 1)[1])
    stalled = []
    for _ in range(12):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's first bytes, then nothing
        stalled.append(sock)
    try:
        time.sleep(0.5)
        good = {"verify": str(pki.ca), "cert": (str(pki.client.cert), str(pki.client.key))}
        started = time.monotonic()
        for _ in range(3):
            assert requests.get(f"{mutual.url}/healthz", timeout=10, **good).status_code == 200
        assert time.monotonic() - started < 3
    finally:
        for sock in stalled:
            sock.close()


def _served_serial(url: str, ca: Path) -> int:
    host, port = url.split("//")[1].split(":")
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    from cryptography import x509

    return x509.load_der_x509_certificate(der).serial_number


def test_a_rotated_certificate_is_served_without_a_restart(pki: Pki, tmp_path: Path) -> None:
    from cryptography import x509

    with running_simulator(nodes=1, guests=1) as sim, \
            serve("exporter", exporter_config(sim, tmp_path, **tls_section(pki, tmp_path, client_ca=False)),
                  tmp_path, tls={"verify": str(pki.ca)}) as served:
        first = _served_serial(served.url, pki.ca)
        rotated = reissue(pki, tmp_path / "rotated", "server")
        # A half-done rotation (the new cert, the old key) keeps serving the old pair.
        shutil.copy(rotated.cert, tmp_path / "server.crt")
        time.sleep(1.5)
        assert _served_serial(served.url, pki.ca) == first
        assert "cannot re-read" in served.output()
        shutil.copy(rotated.key, tmp_path / "server.key")
        wanted = x509.load_pem_x509_certificate(rotated.cert.read_bytes()).serial_number
        wait_for(lambda: _served_serial(served.url, pki.ca) == wanted, 10, "the rotated certificate")
        assert served.process.poll() is None
        assert requests.get(f"{served.url}/healthz", verify=str(pki.ca), timeout=10).status_code == 200


def test_the_agent_pushes_over_mutual_tls_and_says_why_when_refused(mutual: Served, pki: Pki) -> None:
    ca, client = str(pki.ca), (str(pki.client.cert), str(pki.client.key))
    assert Pusher(mutual.url, AGENT_KEY, 5, ca_bundle=ca, cert_file=client[0], key_file=client[1]).send(REPORT).ok
    without = Pusher(mutual.url, AGENT_KEY, 5, ca_bundle=ca).send(REPORT)
    assert without.state == "refused:tls" and "certificate required" in without.detail, without
    assert "agent.client_cert_file" in without.detail
    stranger = Pusher(mutual.url, AGENT_KEY, 5, ca_bundle=ca, cert_file=str(pki.stranger.cert),
                      key_file=str(pki.stranger.key)).send(REPORT)
    assert stranger.state == "refused:tls" and "unknown ca" in stranger.detail, stranger
    wrong_ca = Pusher(mutual.url, AGENT_KEY, 5, ca_bundle=str(pki.other_ca), cert_file=client[0],
                      key_file=client[1]).send(REPORT)
    assert wrong_ca.state == "refused:tls" and "agent.ca_bundle" in wrong_ca.detail, wrong_ca


def test_the_shell_agent_pushes_over_mutual_tls(mutual: Served, pki: Pki, tmp_path: Path) -> None:
    log = tmp_path / "sh.log"
    env = {"PATH": os.environ["PATH"], "VMHEALTH_AGENT_EXPORTER_URL": mutual.url,
           "VMHEALTH_AGENT_API_KEY": AGENT_KEY, "VMHEALTH_AGENT_VMID": "101", "VMHEALTH_AGENT_INTERVAL": "1",
           "VMHEALTH_AGENT_CA_BUNDLE": str(pki.ca), "VMHEALTH_AGENT_CLIENT_CERT_FILE": str(pki.client.cert),
           "VMHEALTH_AGENT_CLIENT_KEY_FILE": str(pki.client.key)}
    with Child("shell agent", ["sh", str(AGENT_SH), "--defaults", str(tmp_path / "absent")], log, None, env,
               stop_timeout=10).started():
        wait_for(lambda: "reporting to" in log.read_text(), 20, "the shell agent's first report")
    assert "refused" not in log.read_text()


def test_pull_mode_serves_https_to_clients_of_the_ca_only(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    files = ServerFiles(str(pki.server.cert), str(pki.server.key), str(pki.ca))
    server = MetricsServer("127.0.0.1", 0, lambda: "up 1\n", reloading_server_context(files))
    server.start()
    url = f"https://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        good = requests.get(url, verify=str(pki.ca), cert=(str(pki.client.cert), str(pki.client.key)), timeout=10)
        assert good.status_code == 200 and good.text == "up 1\n"
        with caplog.at_level(logging.WARNING), pytest.raises(requests.exceptions.ConnectionError):
            requests.get(url, verify=str(pki.ca), timeout=10)
        wait_for(lambda: "peer did not return a certificate" in caplog.text, 5, "the refusal in the log")
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(url.replace("https:", "http:"), timeout=10)
    finally:
        server.shutdown()
        server.server_close()


def test_tls_min_version_refuses_older_clients_saying_why(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    files = ServerFiles(str(pki.server.cert), str(pki.server.key), min_version="1.3")
    server = MetricsServer("127.0.0.1", 0, lambda: "up 1\n", reloading_server_context(files))
    server.start()
    try:
        old = ssl.create_default_context(cafile=str(pki.ca))
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with caplog.at_level(logging.WARNING), pytest.raises(ssl.SSLError), \
                socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as raw:
            old.wrap_socket(raw, server_hostname="127.0.0.1")
        wait_for(lambda: "unsupported protocol" in caplog.text, 5, "the refusal in the log")
        current = ssl.create_default_context(cafile=str(pki.ca))
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as raw, \
                current.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() == "TLSv1.3"
    finally:
        server.shutdown()
        server.server_close()


def test_the_documented_gunicorn_command_serves_https_from_the_files_keys(pki: Pki, tmp_path: Path) -> None:
    """`VMHEALTH_CONFIG=… gunicorn -c webhook/gunicorn.conf.py …` takes the tls_* keys as `vmhealth webhook` does."""
    port = free_port()
    (tmp_path / "vmhealth.yml").write_text(yaml.safe_dump({
        "clusters": [{"name": "lab", "host": "127.0.0.1:9", "token_id": "a@pve!b", "token_secret": "s",
                      "verify_ssl": False}],
        "webhook": {"listen": f"127.0.0.1:{port}", "token": "alertmanager-token-from-file",
                    "admin_token": "admin-token-from-file", "database_url": f"sqlite:///{tmp_path / 'webhook.db'}",
                    **tls_section(pki, tmp_path, client_ca=True)}}))
    root = Path(__file__).resolve().parents[2]
    good = {"verify": str(pki.ca), "cert": (str(pki.client.cert), str(pki.client.key))}
    gunicorn = Child("gunicorn", [sys.executable, "-m", "gunicorn", "-c", str(root / "webhook/gunicorn.conf.py"),
                                  "vmhealth.webhook:create_app()"], tmp_path / "gunicorn.log",
                     f"https://127.0.0.1:{port}/healthz", clean_env(VMHEALTH_CONFIG=str(tmp_path / "vmhealth.yml")),
                     good, stop_timeout=30, cwd=tmp_path)
    with gunicorn.started(60), pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"https://127.0.0.1:{port}/healthz", timeout=5, verify=str(pki.ca))


def test_pipelined_requests_over_tls_are_all_answered(mutual: Served, pki: Pki) -> None:
    """A kept-alive request and a second one with a 12 KB body, sent in one TLS record, are both answered
    (the second from what the loop buffered behind the first)."""
    port = int(mutual.url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    body = b'{"hostname": "vm100", "vmid": "100", "cpuUsage": 1, "pad": "' + b"x" * 12000 + b'"}'
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    second = (f"POST /api/health/report HTTP/1.1\r\nHost: x\r\nX-API-Key: {AGENT_KEY}\r\nConnection: close\r\n"
              f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    assert len(first + second) < 16384  # one record
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(first + second)
        replies = b""
        while replies.count(b"HTTP/1.1 ") < 2:
            chunk = tls.recv(65536)
            if not chunk:
                break
            replies += chunk
    assert replies.count(b"HTTP/1.1 200") == 2, replies[:500]


def _same_size_pair(pki: Pki, folder: Path, cert: Path, key: Path) -> tuple[Path, Path]:
    """A new pair whose files are as large as the served ones (the serial and signature vary in length)."""
    for attempt in range(50):
        pair = reissue(pki, folder / str(attempt), "server")
        if pair.cert.stat().st_size == cert.stat().st_size and pair.key.stat().st_size == key.stat().st_size:
            return pair.cert, pair.key
    raise AssertionError("no certificate of the same size in 50 attempts")


def test_sighup_reads_certificates_the_change_check_cannot_see(pki: Pki, tmp_path: Path) -> None:
    """Files rewritten in place with their old size and modification time look unchanged to the
    once-a-second check; a SIGHUP to the master restarts the worker, which reads them."""
    import signal

    from cryptography import x509

    with running_simulator(nodes=1, guests=1) as sim, \
            serve("exporter", exporter_config(sim, tmp_path, **tls_section(pki, tmp_path, client_ca=False)),
                  tmp_path, tls={"verify": str(pki.ca)}) as served:
        first = _served_serial(served.url, pki.ca)
        cert, key = tmp_path / "server.crt", tmp_path / "server.key"
        new_cert, new_key = _same_size_pair(pki, tmp_path / "rotated", cert, key)
        for target, source in ((cert, new_cert), (key, new_key)):
            times = target.stat()
            target.write_bytes(source.read_bytes())  # same inode, same size
            os.utime(target, ns=(times.st_atime_ns, times.st_mtime_ns))
        time.sleep(1.5)
        assert _served_serial(served.url, pki.ca) == first
        served.process.send_signal(signal.SIGHUP)
        wanted = x509.load_pem_x509_certificate(new_cert.read_bytes()).serial_number
        def rotated() -> bool:
            try:
                return _served_serial(served.url, pki.ca) == wanted
            except OSError:  # the worker is being replaced
                return False

        wait_for(rotated, 30, "the certificate read after SIGHUP")
        assert served.process.poll() is None


def test_the_agent_reads_a_rotated_client_certificate(mutual: Served, pki: Pki, tmp_path: Path) -> None:
    cert, key = tmp_path / "guest.crt", tmp_path / "guest.key"
    shutil.copy(pki.stranger.cert, cert)
    shutil.copy(pki.stranger.key, key)
    pusher = Pusher(mutual.url, AGENT_KEY, 5, ca_bundle=str(pki.ca), cert_file=str(cert), key_file=str(key))
    assert pusher.send(REPORT).state == "refused:tls"
    shutil.copy(pki.client.cert, cert)
    shutil.copy(pki.client.key, key)
    wait_for(lambda: pusher.send(REPORT).ok, 10, "a report with the rotated certificate")


def test_the_agent_in_pull_mode_serves_https_from_its_keys(pki: Pki) -> None:
    from vmhealth.agent.runner import Agent
    from vmhealth.config import load

    port = free_port()
    config = load(raw={"agent": {"mode": "pull", "listen": f"127.0.0.1:{port}", "vmid": 100,
                                 "tls_cert_file": str(pki.server.cert), "tls_key_file": str(pki.server.key),
                                 "tls_client_ca_file": str(pki.ca)}}, environ={})
    agent = Agent(config.agent)
    agent.start_server()
    try:
        page = requests.get(f"https://127.0.0.1:{port}/metrics", verify=str(pki.ca), timeout=10,
                            cert=(str(pki.client.cert), str(pki.client.key)))
        assert page.status_code == 200 and "vmhealth_agent_info" in page.text
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"https://127.0.0.1:{port}/metrics", verify=str(pki.ca), timeout=10)
    finally:
        agent.server.shutdown()
        agent.server.server_close()


def test_the_compose_files_tls_healthcheck_works(mutual: Served, pki: Pki) -> None:
    """The commented healthcheck of docker-compose.yml, switched on, passes against an exporter with
    mutual TLS (its files where the compose file mounts them)."""
    compose = (Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text()
    line = next(line for line in compose.splitlines() if "https://127.0.0.1:9747/healthz" in line)
    command = yaml.safe_load(line.strip().removeprefix("# "))["test"]
    assert command[:3] == ["CMD", "python", "-c"]
    port = mutual.url.rsplit(":", 1)[1]
    code = (command[3].replace("/etc/vmhealth/tls/ca.pem", str(pki.ca))
            .replace("/etc/vmhealth/tls/probe.crt", str(pki.client.cert))
            .replace("/etc/vmhealth/tls/probe.key", str(pki.client.key)).replace(":9747/", f":{port}/"))
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0, probe.stderr
    refused = subprocess.run([sys.executable, "-c", code.replace(str(pki.client.cert), str(pki.stranger.cert))
                              .replace(str(pki.client.key), str(pki.stranger.key))],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0


def test_the_webhook_reads_heartbeats_from_an_exporter_with_mutual_tls(mutual: Served, pki: Pki) -> None:
    from vmhealth.webhook.heartbeat import HeartbeatReader

    good = {"verify": str(pki.ca), "cert": (str(pki.client.cert), str(pki.client.key))}
    assert requests.post(f"{mutual.url}/api/health/report", json=REPORT, headers={"X-API-Key": AGENT_KEY},
                         timeout=10, **good).status_code == 200
    cluster = requests.get(f"{mutual.url}/api/vms/100", timeout=10, **good).json()["cluster"]
    read = HeartbeatReader(None, [mutual.url], ca_bundle=str(pki.ca), client_cert=good["cert"]).age(cluster, 100)
    assert read.error == "" and read.age is not None and read.age < 30, read
    refused = HeartbeatReader(None, [mutual.url], ca_bundle=str(pki.ca)).age(cluster, 100)
    assert refused.age is None and "SSLError" in refused.error, refused
