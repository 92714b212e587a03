"""Known vulnerabilities in the installed dependencies, from PyPI's advisory data (CI step).

    .venv/bin/python .ci/audit.py

First `pip-audit --strict`, which reads each installed version's advisories from PyPI. Where PyPI
serves the per-version data (`/pypi/NAME/VERSION/json`) that is the whole audit. Where it does not
(a mirror that serves only `/pypi/NAME/json`), pip-audit would report every package as "not
audited" and, without --strict, still say "No known vulnerabilities found": then every package is
checked against the advisories PyPI lists for its latest release, which is exact when the latest is
what is installed; a package behind its latest release cannot be audited that way and fails the run,
as does any advisory and an unreachable PyPI. Nothing is skipped silently.

Known vulnerabilities that do not apply are ignored by id in IGNORED, each with its reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import distributions
from pathlib import Path

PYPI = "https://pypi.org/pypi/{name}/json"
IGNORED: dict[str, str] = {}  # advisory id -> why it does not apply to vmhealth
PROJECT = "vmhealth"


def pip_audit() -> tuple[int, str]:
    """pip-audit's exit status and output."""
    command = [str(Path(sys.executable).with_name("pip-audit")), "--strict", "--skip-editable",
               "--progress-spinner", "off", "--timeout", "30"]
    for advisory in IGNORED:
        command += ["--ignore-vuln", advisory]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    return result.returncode, result.stdout + result.stderr


def installed() -> dict[str, str]:
    """Every distribution of this environment but the project itself: name -> version."""
    found = {}
    for dist in distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name and name != PROJECT:
            found[name] = dist.version
    return found


def latest_advisories(name: str) -> tuple[str, str, list[dict]]:
    """(name, latest version, advisories of the latest version) from PyPI's project JSON."""
    with urllib.request.urlopen(PYPI.format(name=name), timeout=30) as reply:
        data = json.load(reply)
    return name, data["info"]["version"], data.get("vulnerabilities") or []


def fallback() -> int:
    packages = installed()
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(latest_advisories, sorted(packages)))
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        print(f"audit: FAILED, PyPI's advisory data cannot be read: {exc}")
        return 1
    vulnerable, behind = [], []
    for name, latest, advisories in answers:
        if packages[name] != latest:
            behind.append(f"{name} {packages[name]} (latest {latest})")
            continue
        for advisory in advisories:
            if advisory.get("withdrawn") or advisory.get("id") in IGNORED:
                continue
            fixed = ", ".join(advisory.get("fixed_in") or []) or "no fixed release"
            vulnerable.append(f"{name} {packages[name]}: {advisory.get('id')} (fixed in {fixed})")
    for line in vulnerable:
        print(f"audit: VULNERABLE {line}")
    if behind:
        print("audit: FAILED, not auditable here (PyPI serves advisories only for the latest release); "
              "upgrade: " + "; ".join(behind))
    if vulnerable or behind:
        return 1
    print(f"audit: {len(answers)} packages, each at its latest release, checked against PyPI's advisories: "
          "no known vulnerabilities")
    return 0


def main() -> int:
    status, output = pip_audit()
    if status == 0:
        print(output.strip().splitlines()[0] if output.strip() else "pip-audit: no known vulnerabilities")
        print(f"audit: pip-audit checked {len(installed())} packages")
        return 0
    if "could not be audited" not in output:
        print(output)
        print("audit: FAILED, pip-audit found known vulnerabilities (or could not run)")
        return 1
    print("audit: pip-audit cannot read per-version advisories from this PyPI; checking each package's latest")
    return fallback()


if __name__ == "__main__":
    sys.exit(main())
