"""The repository's promtool cases (prometheus/tests/) and a way to run the tools on them."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


TEST_FILES = sorted((ROOT / "prometheus" / "tests").glob("*.yml"))


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
