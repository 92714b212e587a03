"""The Windows service wrapper, run here with pywin32's modules faked: start, serve, stop, refuse."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import threading
import time
import types
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


class _FakeFramework:
    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.statuses: list[tuple[Any, dict[str, Any]]] = []

    def ReportServiceStatus(self, status: Any, **kwargs: Any) -> None:
        self.statuses.append((status, kwargs))


@pytest.fixture
def service_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[types.ModuleType]:
    events: list[str] = []
    servicemanager = types.SimpleNamespace(LogInfoMsg=events.append, LogErrorMsg=events.append)
    win32service = types.SimpleNamespace(SERVICE_STOP_PENDING="stop-pending", SERVICE_STOPPED="stopped")
    win32serviceutil = types.SimpleNamespace(ServiceFramework=_FakeFramework)
    for name, module in [("servicemanager", servicemanager), ("win32service", win32service),
                         ("win32serviceutil", win32serviceutil)]:
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "vmhealth.agent.windows_service", raising=False)
    module = importlib.import_module("vmhealth.agent.windows_service")
    module.events = events  # type: ignore[attr-defined]
    monkeypatch.setenv("ProgramData", str(tmp_path))
    for var in [v for v in os.environ if v.startswith("VMHEALTH_")]:
        monkeypatch.delenv(var)
    yield module
    sys.modules.pop("vmhealth.agent.windows_service", None)

    root = logging.getLogger()
    for handler in list(root.handlers):  # the service pointed logging at a file in tmp_path
        if str(getattr(getattr(handler, "stream", None), "name", "")).startswith(str(tmp_path)):
            root.removeHandler(handler)
            handler.stream.close()


def test_paths_follow_programdata_and_vmhealth_config(service_module: types.ModuleType) -> None:
    env = {"ProgramData": r"D:\Data"}
    assert service_module.config_path(env).endswith("agent.yml") and "vmhealth" in service_module.config_path(env)
    assert service_module.config_path({**env, "VMHEALTH_CONFIG": r"E:\agent.json"}) == r"E:\agent.json"


def test_service_runs_the_agent_until_stopped(service_module: types.ModuleType, tmp_path: Path, port: int) -> None:
    folder = tmp_path / "vmhealth"
    folder.mkdir()
    (folder / "agent.yml").write_text(json.dumps({"agent": {"mode": "pull", "listen": f"127.0.0.1:{port}",
                                                            "vmid": 4242}}))
    service = service_module.AgentService(["vmhealth-agent"])
    runner = threading.Thread(target=service.SvcDoRun, daemon=True)
    runner.start()
    try:
        deadline, page = time.monotonic() + 20, ""
        while time.monotonic() < deadline and "vmhealth_agent_info" not in page:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
                    page = reply.read().decode()
            except OSError:
                time.sleep(0.1)
        assert 'vmid="4242"' in page
    finally:
        service.SvcStop()
        runner.join(timeout=10)
    assert not runner.is_alive()
    assert service.statuses == [("stop-pending", {})]  # a clean stop: no failure status reported
    assert (folder / "agent.log").read_text().count("serving /metrics") == 1


def test_bad_configuration_stops_with_a_service_specific_error(
    service_module: types.ModuleType, tmp_path: Path
) -> None:
    folder = tmp_path / "vmhealth"
    folder.mkdir()
    (folder / "agent.yml").write_text(json.dumps({"agent": {"mode": "push", "interval": "soon"}}))
    service = service_module.AgentService(["vmhealth-agent"])
    service.SvcDoRun()
    status, detail = service.statuses[-1]
    assert status == "stopped" and detail == {"win32ExitCode": 1066, "svcExitCode": 2}
    log = (folder / "agent.log").read_text()
    assert "agent.interval" in log
    assert any("exit status 2" in e for e in service_module.events)


def test_missing_key_in_push_mode_is_named(service_module: types.ModuleType, tmp_path: Path) -> None:
    stop = threading.Event()
    status = service_module.run_agent(stop, str(tmp_path / "absent.yml"), environ={})
    assert status == 2
