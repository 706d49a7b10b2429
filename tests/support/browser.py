"""Headless Debian Chromium for the browser tests, driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach hosts a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch_chromium() -> Iterator[Browser]:
    """Yield a running Chromium; skip without one, except under CI, where a missing browser fails."""
    if not CHROMIUM.exists():
        reason = f"Chromium not found at {CHROMIUM}; install the Debian 'chromium' package to run browser tests"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}. CI is set, and CI must run these tests.")
        pytest.skip(reason)

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
