"""`vmhealth agent-key`: prints the per-VM key the exporter accepts for a guest, and says what is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vmhealth.keys import derive_vm_key

SHARED = "shared-agent-key-for-the-cli-test"


def run(tmp_path: Path, *args: str, clusters: tuple[str, ...] = ("lab",)) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "vmhealth.yml"
    config.write_text("clusters:\n" + "".join(
        f"  - {{name: {name}, host: 127.0.0.1:8006, token_id: a@pve!b, token_secret: s}}\n" for name in clusters)
        + f"exporter:\n  api_key: {SHARED}\n")
    return subprocess.run([sys.executable, "-m", "vmhealth", "agent-key", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_it_prints_the_key_of_one_guest_or_of_several(tmp_path: Path) -> None:
    one = run(tmp_path, "--vmid", "104")
    assert one.returncode == 0 and one.stdout == derive_vm_key(SHARED, "lab", 104) + "\n"
    several = run(tmp_path, "--cluster", "lab", "--vmid", "104", "105")
    assert several.stdout.splitlines() == [f"104 {derive_vm_key(SHARED, 'lab', 104)}",
                                           f"105 {derive_vm_key(SHARED, 'lab', 105)}"]


def test_an_unknown_or_missing_cluster_and_a_bad_vmid_are_named(tmp_path: Path) -> None:
    unknown = run(tmp_path, "--cluster", "prod", "--vmid", "104")
    assert unknown.returncode == 2 and "no cluster 'prod' in the configuration (configured: lab)" in unknown.stderr
    ambiguous = run(tmp_path, "--vmid", "104", clusters=("lab", "prod"))
    assert ambiguous.returncode == 2 and "--cluster is needed: the configuration has 2 clusters" in ambiguous.stderr
    bad = run(tmp_path, "--vmid", "0")
    assert bad.returncode == 2 and "--vmid must be positive" in bad.stderr
    assert SHARED not in unknown.stderr + ambiguous.stderr + bad.stderr
