"""The agent as a Windows service (pywin32), a thin shell around the same `Agent.run` as on Linux.

Imported only on Windows. Install, start and remove it with agent/install-windows.ps1, or by hand:

  python -m vmhealth.agent.windows_service --startup delayed install
  python -m vmhealth.agent.windows_service start

The configuration is %ProgramData%\\vmhealth\\agent.yml (or VMHEALTH_CONFIG, set in the service's
environment); the log goes to %ProgramData%\\vmhealth\\agent.log, since a service has no console. A bad
configuration stops the service with a service-specific exit code, so the restart-on-failure actions
the install script sets apply and the reason is in the log and the Event Log.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping

import servicemanager
import win32service
import win32serviceutil

SERVICE_NAME = "vmhealth-agent"
ERROR_SERVICE_SPECIFIC_ERROR = 1066

log = logging.getLogger("vmhealth.agent.service")


def data_dir(environ: Mapping[str, str] = os.environ) -> str:
    return os.path.join(environ.get("ProgramData", r"C:\ProgramData"), "vmhealth")


def config_path(environ: Mapping[str, str] = os.environ) -> str:
    """VMHEALTH_CONFIG when set, else %ProgramData%\\vmhealth\\agent.yml."""
    return environ.get("VMHEALTH_CONFIG") or os.path.join(data_dir(environ), "agent.yml")


def setup_service_logging(path: str, level: str = "info") -> None:
    """The command line's logging (secrets masked), written to `path` instead of the absent console."""
    from vmhealth.logsetup import setup_logging

    os.makedirs(os.path.dirname(path), exist_ok=True)
    setup_logging(level)
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and handler.stream is sys.stderr:
            handler.setStream(open(path, "a", encoding="utf-8"))  # noqa: SIM115 - lives as long as the service


def run_agent(stop: threading.Event, path: str, environ: Mapping[str, str] = os.environ) -> int:
    """Load the configuration and run the agent until `stop`; 2 (logged) when the configuration is unusable."""
    from vmhealth.config import ConfigError, load, secrets_of
    from vmhealth.logsetup import add_secrets

    from .runner import Agent

    try:
        config = load(path if os.path.exists(path) else None, environ=environ)
    except ConfigError as exc:
        log.error("%s has %d problem(s): %s", path, len(exc.problems), "; ".join(exc.problems))
        return 2
    add_secrets(secrets_of(config))
    if config.agent.mode in ("push", "both") and not config.agent.api_key:
        log.error("agent.api_key: missing (mode %s pushes to the exporter; set it in %s)", config.agent.mode, path)
        return 2
    return Agent(config.agent).run(stop)


class AgentService(win32serviceutil.ServiceFramework):
    """Start: run the agent in the service thread. Stop: set the event the agent waits on."""

    _svc_name_ = SERVICE_NAME
    _svc_display_name_ = "vmhealth agent"
    _svc_description_ = "Reports this guest's health to vmhealth so a hung VM can be found and reset."

    def __init__(self, args: list[str]) -> None:
        super().__init__(args)
        self.stop_event = threading.Event()

    def SvcStop(self) -> None:
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
        self.stop_event.set()

    def SvcDoRun(self) -> None:
        setup_service_logging(os.path.join(data_dir(), "agent.log"), os.environ.get("VMHEALTH_LOG_LEVEL", "info"))
        servicemanager.LogInfoMsg(f"{SERVICE_NAME}: starting with {config_path()}")
        try:
            status = run_agent(self.stop_event, config_path())
        except Exception as exc:
            log.exception("the agent stopped on an error")
            servicemanager.LogErrorMsg(f"{SERVICE_NAME}: stopped on an error: {exc}")
            status = 1
        if status:
            servicemanager.LogErrorMsg(f"{SERVICE_NAME}: exit status {status}; see {data_dir()}\\agent.log")
            self.ReportServiceStatus(win32service.SERVICE_STOPPED, win32ExitCode=ERROR_SERVICE_SPECIFIC_ERROR,
                                     svcExitCode=status)


if __name__ == "__main__":
    if len(sys.argv) == 1:
        servicemanager.Initialize()
        servicemanager.PrepareToHostSingle(AgentService)
        servicemanager.StartServiceCtrlDispatcher()
    else:
        win32serviceutil.HandleCommandLine(AgentService)
