"""Debian's Chromium (``/usr/bin/chromium``, or ``SIMAPP_CHROMIUM``) launched through Playwright, as the
browser tests and the README's screenshots (``docs/screenshots.py``) use it: nothing is downloaded."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

CHROMIUM = os.environ.get("SIMAPP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_launch(playwright: Playwright) -> Browser:
    """Headless Chromium of ``CHROMIUM`` with ``CHROMIUM_ARGS``."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
