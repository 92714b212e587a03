"""End to end over mutual TLS: the real Prometheus scrapes the exporter and the webhook over HTTPS with a
client certificate, the real Alertmanager posts to the webhook verifying a private CA, the simulated
agents and `vmhealth agent` push with client certificates, and a hung guest is reset through all of it.
A wrong CA, an expired client certificate and no client certificate are each refused, and both sides'
logs (Prometheus' `lastError`, the exporter's log) say why.

Cost: about 40 s.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.helpers.e2e import latency_bound, settled, wait_for_reset, whole_stack
from tests.helpers.tls import Pki, make_pki
from vmhealth.stack.processes import wait_for
from vmhealth.stack.running import Stack, StackTLS, scrape_security, targets

pytestmark = [pytest.mark.binaries, pytest.mark.slow]


def refused_jobs(stack: Stack, pki: Pki) -> list[dict[str, Any]]:
    """Jobs scraping the exporter that its TLS must refuse, each for one reason."""
    security = scrape_security(stack.settings)
    client = {"cert_file": str(pki.client.cert), "key_file": str(pki.client.key)}
    tls = {
        "wrong-ca": {"ca_file": str(pki.other_ca), **client},
        "expired-client-cert": {"ca_file": str(pki.ca), "cert_file": str(pki.expired_client.cert),
                                "key_file": str(pki.expired_client.key)},
        "no-client-cert": {"ca_file": str(pki.ca)},
    }
    return [{"job_name": name, "static_configs": targets([stack.urls["exporter"]]), **security, "tls_config": config}
            for name, config in tls.items()]


def target_errors(stack: Stack) -> dict[str, tuple[str, str]]:
    reply = requests.get(f"{stack.urls['prometheus']}/api/v1/targets", timeout=10).json()
    return {t["labels"]["job"]: (t["health"], t["lastError"]) for t in reply["data"]["activeTargets"]}


def agent_check(stack: Stack, folder: Path, **agent: Any) -> subprocess.CompletedProcess[str]:
    """`vmhealth agent --check` (one real report) for guest 100 with these agent keys."""
    path = folder / f"agent-{len(list(folder.glob('agent-*.yml')))}.yml"
    path.write_text(yaml.safe_dump({"agent": {"exporter_url": stack.urls["exporter"], "vmid": 100,
                                              "cluster": stack.cluster, "api_key": stack.agent_key(100), **agent}}))
    return subprocess.run([sys.executable, "-m", "vmhealth", "agent", "--config", str(path), "--check"],
                          capture_output=True, text=True, timeout=60)


def test_the_stack_over_mutual_tls_resets_a_hung_guest_and_refuses_bad_credentials(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = StackTLS(pki.ca, pki.server.cert, pki.server.key, pki.client.cert, pki.client.key)
    with whole_stack(tmp_path / "stack", nodes=2, guests=4, tls=tls) as stack:
        assert stack.urls["exporter"].startswith("https://") and stack.urls["webhook"].startswith("https://")
        wait_for(lambda: {job: health for job, (health, _) in target_errors(stack).items()}
                 == {"vmhealth-exporter": "up", "vmhealth-webhook": "up"}, 30, "both scraped over TLS")

        # The refused jobs: added to the running Prometheus (a SIGHUP re-reads its file).
        config_path = stack.workdir / "prometheus.yml"
        config = yaml.safe_load(config_path.read_text())
        config["scrape_configs"] += refused_jobs(stack, pki)
        config_path.write_text(yaml.safe_dump(config))
        process = stack.processes["prometheus"].process
        assert process is not None
        process.send_signal(signal.SIGHUP)
        expected = {"wrong-ca": "x509: certificate signed by unknown authority",
                    "expired-client-cert": "expired certificate", "no-client-cert": "certificate required"}

        def refused() -> dict[str, tuple[str, str]]:
            errors = target_errors(stack)
            return errors if all(errors.get(job, ("", ""))[0] == "down" for job in expected) else {}

        errors = wait_for(refused, 30, "the refused jobs to be scraped")
        for job, why in expected.items():
            assert why in errors[job][1], (job, errors[job])
        log = stack.log("exporter")
        for why in ("the peer does not trust this certificate (sslv3 alert bad certificate)",
                    "certificate verify failed: certificate has expired", "peer did not return a certificate"):
            assert why in log, (why, [line for line in log.splitlines() if "TLS" in line])

        # The agent pushes over mutual TLS; without its certificate it is refused and says why.
        ok = agent_check(stack, tmp_path, ca_bundle=str(pki.ca), client_cert_file=str(pki.client.cert),
                         client_key_file=str(pki.client.key))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        refused_agent = agent_check(stack, tmp_path, ca_bundle=str(pki.ca))
        assert refused_agent.returncode != 0
        assert "certificate required" in refused_agent.stdout + refused_agent.stderr

        # A hung guest is reset: Prometheus (TLS scrape) -> Alertmanager -> webhook (TLS, private CA).
        since = settled(stack)
        stack.sim.hang(101)
        bound, formula = latency_bound(stack)
        wait_for_reset(stack, 101, since, bound + 30)
        wait_for(lambda: [r for r in stack.resets(101) if r["outcome"] == "success"], 30, "the reset's history row")
        assert time.time() - since < bound + 60, formula

        # `vmhealth history` reaches the webhook over https (from webhook.tls_cert_file) with a client cert.
        command = [sys.executable, "-m", "vmhealth", "history", "--config", str(stack.config_path), "--vmid", "101",
                   "--ca-file", str(pki.ca), "--cert", str(pki.client.cert), "--key", str(pki.client.key)]
        shown = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0 and "success" in shown.stdout, shown.stdout + shown.stderr
        without = subprocess.run(command[:-6], capture_output=True, text=True, timeout=60)
        assert without.returncode == 1 and "cannot reach the webhook" in without.stderr, without.stderr
