"""Debian's chromium, headless, driven by selenium through Debian's chromedriver: nothing is downloaded.

`chromium_driver()` skips the test when either binary is missing, or fails it when the real binaries
are required (VMHEALTH_REQUIRE_BINARIES=1, as in .ci/run, which installs both).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = ("chromium", "chromium-browser")
CHROMEDRIVER = "chromedriver"
PAGE_TIMEOUT = 20.0


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if found:
            return found
    return None


def chromium_driver(width: int = 1280, height: int = 900) -> Any:
    browser, driver = _find(*CHROMIUM), _find(CHROMEDRIVER)
    if not browser or not driver:
        message = "Debian's chromium and chromium-driver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("VMHEALTH_REQUIRE_BINARIES", "") not in ("", "0", "false", "no"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chrome.set_page_load_timeout(PAGE_TIMEOUT)
    return chrome


def color_scheme(chrome: Any, scheme: str) -> None:
    """Make the page see `prefers-color-scheme: <scheme>` (light or dark)."""
    chrome.execute_cdp_cmd("Emulation.setEmulatedMedia",
                           {"features": [{"name": "prefers-color-scheme", "value": scheme}]})


def phone(chrome: Any, on: bool) -> None:
    """A phone's viewport (390 x 844 at 3x), or the laptop's again."""
    if on:
        chrome.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    else:
        chrome.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
