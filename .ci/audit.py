"""Known vulnerabilities in the installed dependencies, from PyPI's advisory data (CI step).

    .venv/bin/python .ci/audit.py

First `pip-audit --strict`, which reads each installed version's advisories from PyPI. Where PyPI
serves the per-version data (`/pypi/NAME/VERSION/json`) that is the whole audit. Where it does not
(a mirror that serves only `/pypi/NAME/json`), pip-audit would report every package as "not
audited" and, without --strict, still say "No known vulnerabilities found": then every package is
checked against the advisories PyPI lists for its latest release, which is exact when the latest is
what is installed; a package behind its latest release cannot be audited that way and fails the run,
as does any advisory and an unreachable PyPI. Nothing is skipped silently.

Known vulnerabilities that do not apply are ignored by id in IGNORED, each with its reason. A
package that another installed package (itself at its latest release) caps below its latest release
cannot be upgraded, so it cannot be audited this way either; nor can a package whose latest release
requires a version of another project that no release of it satisfies (uninstallable anywhere). Such
a package passes only when HELD_BACK names it with its reason and the cap, or the unsatisfiable
requirement, is still there; once it is lifted the entry stops applying.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import distributions, requires
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

PYPI = "https://pypi.org/pypi/{name}/json"
IGNORED: dict[str, str] = {}  # advisory id -> why it does not apply to vmhealth
# package -> why it may stay unaudited while an installed package caps it below its latest release
HELD_BACK: dict[str, str] = {
    "jsonschema-rs": "test only: schemathesis's JSON Schema validator (tests/core/test_openapi.py); "
                     "no part of vmhealth installs or imports it",
    "selenium": "test only: drives Debian's chromium in the console's browser tests (tests/helpers/browser.py); "
                "no part of vmhealth installs or imports it",
}
PROJECT = "vmhealth"


def canonical(name: str) -> str:
    """PyPI's normalised project name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


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


def requirements(name: str) -> list[str]:
    """The Requires-Dist lines of an installed distribution."""
    return requires(name) or []


def applicable(lines: list[str]) -> list[Requirement]:
    """The requirements among Requires-Dist `lines` that apply without extras."""
    found = []
    for line in lines:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            found.append(requirement)
    return found


def holder(name: str, latest: str, current: set[str]) -> str | None:
    """The installed package at its latest release that requires `name` below `latest`, if any."""
    for other in sorted(current):
        for requirement in applicable(requirements(other)):
            if canonical(requirement.name) == canonical(name) and latest not in requirement.specifier:
                return other
    return None


def _project(name: str) -> dict:
    with urllib.request.urlopen(PYPI.format(name=name), timeout=30) as reply:
        return json.load(reply)


def unsatisfiable(name: str) -> str | None:
    """A requirement of `name`'s latest release that no release of the required project satisfies, if any."""
    for requirement in applicable(_project(name)["info"].get("requires_dist") or []):
        releases = [v for v, files in _project(requirement.name)["releases"].items() if files]
        if not list(requirement.specifier.filter(releases, prereleases=True)):
            return str(requirement)
    return None


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
    vulnerable, behind, held = [], [], []
    current = {name for name, latest, _ in answers if packages[name] == latest}
    for name, latest, advisories in answers:
        if packages[name] != latest:
            capped_by = holder(name, latest, current) if canonical(name) in HELD_BACK else None
            if canonical(name) in HELD_BACK and not capped_by:
                needs = unsatisfiable(name)
                capped_by = f"its latest release, which requires {needs} that no release satisfies" if needs else None
            if capped_by:
                held.append(f"{name} {packages[name]} (latest {latest}, capped by {capped_by}: "
                            f"{HELD_BACK[canonical(name)]})")
            else:
                behind.append(f"{name} {packages[name]} (latest {latest})")
            continue
        for advisory in advisories:
            if advisory.get("withdrawn") or advisory.get("id") in IGNORED:
                continue
            fixed = ", ".join(advisory.get("fixed_in") or []) or "no fixed release"
            vulnerable.append(f"{name} {packages[name]}: {advisory.get('id')} (fixed in {fixed})")
    for line in vulnerable:
        print(f"audit: VULNERABLE {line}")
    for line in held:
        print(f"audit: NOT AUDITED, held back on purpose: {line}")
    if behind:
        print("audit: FAILED, not auditable here (PyPI serves advisories only for the latest release); "
              "upgrade: " + "; ".join(behind))
    if vulnerable or behind:
        return 1
    print(f"audit: {len(answers) - len(held)} packages, each at its latest release, checked against PyPI's "
          f"advisories: no known vulnerabilities; {len(held)} held back (listed above)")
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
