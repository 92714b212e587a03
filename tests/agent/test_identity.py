"""Identity: the SMBIOS UUID as the guest firmware shows it maps to the one Proxmox writes in smbios1."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vmhealth.agent.collect import Sample
from vmhealth.agent.identity import normalize_uuid, read_linux_uuid, read_windows_uuid, smbios_uuid
from vmhealth.agent.payload import Identity, build
from vmhealth.pve import parse_smbios_uuid

# As `qm config 100` prints it: Proxmox generates the UUID in lower case.
PVE_SMBIOS1 = "uuid=7b5a2f0e-1c4e-4b8a-9d2f-3e6c1a0b9d44,manufacturer=UHJveG1veA==,base64=1"


def test_linux_product_uuid_maps_to_the_vm_config(tmp_path: Path) -> None:
    sysfs = tmp_path / "product_uuid"
    sysfs.write_text("7b5a2f0e-1c4e-4b8a-9d2f-3e6c1a0b9d44\n")  # what the guest kernel shows
    uuid, why = read_linux_uuid((str(sysfs),))
    assert why == "" and uuid == parse_smbios_uuid(PVE_SMBIOS1)
    report = build(Sample(timestamp=0, hostname="web-1"), Identity(uuid=uuid))
    assert "vmid" not in report and report["uuid"] == "7b5a2f0e-1c4e-4b8a-9d2f-3e6c1a0b9d44"


def test_windows_uuid_is_upper_case_and_still_maps() -> None:
    def fake_run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert "Win32_ComputerSystemProduct" in argv[-1]
        return subprocess.CompletedProcess(argv, 0, "7B5A2F0E-1C4E-4B8A-9D2F-3E6C1A0B9D44\r\n", "")

    uuid, why = read_windows_uuid(fake_run)
    assert uuid == parse_smbios_uuid(PVE_SMBIOS1) and why == ""


def test_windows_query_failure_explains(tmp_path: Path) -> None:
    def missing(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(2, "No such file", "powershell.exe")

    uuid, why = read_windows_uuid(missing)
    assert uuid is None and "Win32_ComputerSystemProduct" in why


def test_root_only_file_falls_back_to_the_copy_and_explains_when_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sysfs, copy = tmp_path / "product_uuid", tmp_path / "copy"
    sysfs.write_text("7b5a2f0e-1c4e-4b8a-9d2f-3e6c1a0b9d44\n")
    real_open = open

    def guarded_open(path, *args, **kwargs):  # the tests may run as root, where chmod 000 stops nothing
        if str(path) == str(sysfs):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    uuid, why = read_linux_uuid((str(sysfs), str(copy)))
    assert uuid is None and "readable by root only" in why
    copy.write_text("7B5A2F0E-1C4E-4B8A-9D2F-3E6C1A0B9D44")
    assert read_linux_uuid((str(sysfs), str(copy))) == ("7b5a2f0e-1c4e-4b8a-9d2f-3e6c1a0b9d44", "")


@pytest.mark.parametrize("text", ["", "Not Settable", "00000000-0000-0000-0000-000000000000",
                                  "03000200-0400-0500-0006-000700080009", "7b5a2f0e-1c4e"])
def test_placeholders_are_not_identities(text: str) -> None:
    assert normalize_uuid(text) is None


def test_configured_uuid_wins_and_a_bad_one_is_named() -> None:
    assert smbios_uuid("{7B5A2F0E-1C4E-4B8A-9D2F-3E6C1A0B9D44}") == ("7b5a2f0e-1c4e-4b8a-9d2f-3e6c1a0b9d44", "")
    uuid, why = smbios_uuid("vm-100")
    assert uuid is None and "agent.uuid 'vm-100' is not a UUID" in why
