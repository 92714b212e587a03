"""The CI dependency audit (.ci/audit.py) fails on an advisory, on a package it cannot audit and on
unreachable advisory data, and passes only a clean environment. PyPI is replaced by stubs here; CI
runs the real audit. Cost: under a second.
"""

from __future__ import annotations

import importlib.util
import urllib.error
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def audit(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_audit", ROOT / ".ci" / "audit.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "installed", lambda: {"flask": "3.1.0", "requests": "2.34.2"})
    return module


def pypi(answers: dict[str, tuple[str, list[dict[str, Any]]]]) -> Any:
    def latest(name: str) -> tuple[str, str, list[dict[str, Any]]]:
        return name, *answers[name]

    return latest


def test_a_clean_environment_passes(audit: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(audit, "latest_advisories", pypi({"flask": ("3.1.0", []), "requests": ("2.34.2", [])}))
    assert audit.fallback() == 0
    assert "2 packages" in capsys.readouterr().out


def test_an_advisory_fails_the_run(audit: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    advisory = {"id": "GHSA-xxxx", "fixed_in": ["3.1.1"], "withdrawn": None}
    withdrawn = {"id": "GHSA-old", "fixed_in": [], "withdrawn": "2026-01-01"}
    monkeypatch.setattr(audit, "latest_advisories",
                        pypi({"flask": ("3.1.0", [advisory, withdrawn]), "requests": ("2.34.2", [])}))
    assert audit.fallback() == 1
    out = capsys.readouterr().out
    assert "VULNERABLE flask 3.1.0: GHSA-xxxx (fixed in 3.1.1)" in out and "GHSA-old" not in out


def test_an_ignored_advisory_needs_its_id_in_the_list(audit: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    advisory = {"id": "GHSA-xxxx", "fixed_in": ["3.1.1"]}
    monkeypatch.setattr(audit, "latest_advisories", pypi({"flask": ("3.1.0", [advisory]), "requests": ("2.34.2", [])}))
    monkeypatch.setattr(audit, "IGNORED", {"GHSA-xxxx": "the affected function is not used"})
    assert audit.fallback() == 0


def test_a_package_behind_its_latest_release_cannot_be_audited_and_fails(
        audit: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(audit, "latest_advisories", pypi({"flask": ("3.2.0", []), "requests": ("2.34.2", [])}))
    assert audit.fallback() == 1
    assert "flask 3.1.0 (latest 3.2.0)" in capsys.readouterr().out


def projects(flask_needs: list[str], werkzeug_releases: list[str]) -> Any:
    """PyPI's project JSON: flask's latest release requires `flask_needs`; werkzeug has these releases."""
    def project(name: str) -> dict[str, Any]:
        if name == "flask":
            return {"info": {"requires_dist": flask_needs}, "releases": {}}
        return {"info": {}, "releases": {v: [{"filename": "x.whl"}] for v in werkzeug_releases}}

    return project


def held_back(audit: ModuleType, monkeypatch: pytest.MonkeyPatch, cap: str, listed: bool) -> None:
    """flask 3.1.0 installed, 3.2.0 the latest; requests (at its latest) requires flask`cap`."""
    monkeypatch.setattr(audit, "latest_advisories", pypi({"flask": ("3.2.0", []), "requests": ("2.34.2", [])}))
    monkeypatch.setattr(audit, "_project", projects(["Werkzeug>=3.1"], ["3.1.0"]))
    monkeypatch.setattr(audit, "requirements",
                        lambda name: [f"Flask{cap}", "pytest; extra == 'test'"] if name == "requests" else [])
    monkeypatch.setattr(audit, "HELD_BACK", {"flask": "test only"} if listed else {})


def test_a_listed_package_capped_by_another_is_held_back_and_named(
        audit: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    held_back(audit, monkeypatch, "<3.2,>=3.1", listed=True)
    assert audit.fallback() == 0
    out = capsys.readouterr().out
    assert "NOT AUDITED, held back on purpose: flask 3.1.0 (latest 3.2.0, capped by requests: test only)" in out
    assert "1 packages" in out and "1 held back" in out


def test_a_held_back_package_fails_once_the_cap_is_gone(audit: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    held_back(audit, monkeypatch, ">=3.1", listed=True)
    assert audit.fallback() == 1
    assert "upgrade: flask 3.1.0 (latest 3.2.0)" in capsys.readouterr().out


def test_a_capped_package_not_listed_still_fails(audit: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    held_back(audit, monkeypatch, "<3.2", listed=False)
    assert audit.fallback() == 1


def test_a_listed_package_whose_latest_release_cannot_be_installed_is_held_back(
        audit: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    held_back(audit, monkeypatch, ">=3.1", listed=True)
    monkeypatch.setattr(audit, "_project", projects(["Werkzeug>=3.2", "pytest; extra == 'test'"], ["3.1.0", "3.1.1"]))
    assert audit.fallback() == 0
    assert ("flask 3.1.0 (latest 3.2.0, capped by its latest release, which requires werkzeug>=3.2 that no release "
            "satisfies: test only)") in capsys.readouterr().out.replace("Werkzeug", "werkzeug")
    monkeypatch.setattr(audit, "_project", projects(["Werkzeug>=3.2"], ["3.1.0", "3.2.0"]))
    assert audit.fallback() == 1  # once the requirement can be met, the package must be upgraded


def test_unreachable_advisory_data_fails_loudly(audit: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    def unreachable(name: str) -> Any:
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(audit, "latest_advisories", unreachable)
    assert audit.fallback() == 1
    assert "FAILED" in capsys.readouterr().out


def test_pip_audit_success_needs_no_fallback(audit: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "pip_audit", lambda: (0, "No known vulnerabilities found\n"))
    monkeypatch.setattr(audit, "fallback", lambda: pytest.fail("no fallback after a complete pip-audit"))
    assert audit.main() == 0


def test_pip_audit_findings_fail_without_fallback(audit: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "pip_audit", lambda: (1, "Found 1 known vulnerability in 1 package\nflask 3.1.0 X"))
    monkeypatch.setattr(audit, "fallback", lambda: pytest.fail("findings are final"))
    assert audit.main() == 1
