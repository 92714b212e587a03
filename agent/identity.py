"""Who this guest is: its vmid when configured, else the SMBIOS UUID Proxmox gave it.

Proxmox writes `smbios1: uuid=<UUID>` into every VM's config and QEMU hands that UUID to the guest
firmware; the exporter maps it back to the vmid. Linux shows it in /sys/class/dmi/id/product_uuid
(readable by root only: a non-root service reads a copy made at start, see docs/agent.md), Windows in
Win32_ComputerSystemProduct.UUID. Both print the same text; it is sent lower-cased, as the exporter
compares it.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Callable

log = logging.getLogger("vmhealth.agent.identity")

LINUX_UUID_PATHS = ("/sys/class/dmi/id/product_uuid", "/run/vmhealth-agent/product_uuid")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Firmware placeholders that identify no machine.
_PLACEHOLDERS = {"00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
                 "03000200-0400-0500-0006-000700080009"}
_WINDOWS_QUERY = ["powershell.exe", "-NoProfile", "-NonInteractive", "-Command",
                  "(Get-CimInstance -ClassName Win32_ComputerSystemProduct).UUID"]


def normalize_uuid(text: str | None) -> str | None:
    """The UUID in `text`, lower-cased, or None when it is not a usable UUID."""
    if not text:
        return None
    value = text.strip().strip("{}").lower()
    if not _UUID.match(value) or value in _PLACEHOLDERS:
        return None
    return value


def read_linux_uuid(paths: tuple[str, ...] = LINUX_UUID_PATHS) -> tuple[str | None, str]:
    """(UUID, "") from the first readable path, or (None, why none could be read)."""
    reasons = []
    for path in paths:
        try:
            with open(path, encoding="ascii", errors="replace") as handle:
                text = handle.read()
        except FileNotFoundError:
            continue
        except PermissionError:
            reasons.append(f"{path} is readable by root only")
            continue
        except OSError as exc:
            reasons.append(f"{path}: {exc.strerror or exc}")
            continue
        value = normalize_uuid(text)
        if value:
            return value, ""
        reasons.append(f"{path} holds no usable UUID ({text.strip()[:40]!r})")
    return None, "; ".join(reasons) or "no SMBIOS UUID file (not a VM, or no DMI support)"


def read_windows_uuid(run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> tuple[str | None, str]:
    """(UUID, "") from Win32_ComputerSystemProduct, or (None, why not)."""
    try:
        done = run(_WINDOWS_QUERY, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"cannot query Win32_ComputerSystemProduct: {exc}"
    value = normalize_uuid(done.stdout)
    if value:
        return value, ""
    shown = f"{done.stdout.strip()[:40]!r} {done.stderr.strip()[:80]}".strip()
    return None, f"Win32_ComputerSystemProduct has no usable UUID ({shown})"


def smbios_uuid(configured: str | None = None, platform: str = sys.platform) -> tuple[str | None, str]:
    """The guest's SMBIOS UUID, read once at start: the configured one wins over the firmware's."""
    if configured:
        value = normalize_uuid(configured)
        return (value, "") if value else (None, f"agent.uuid {configured!r} is not a UUID")
    if platform == "win32":
        return read_windows_uuid()
    return read_linux_uuid()
