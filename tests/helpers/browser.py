"""A real headless Chromium for the page's tests, driven by Playwright for Python.

The browser is Debian's `chromium` (never one Playwright downloads): CALLSCRIBE_TEST_CHROMIUM names its
executable (`.ci/run` installs it and sets the variable). Without it the browser tests skip, unless CI is set:
then they fail, so CI cannot skip them silently.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM_VARIABLE = "CALLSCRIBE_TEST_CHROMIUM"
ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
)  # fmt: skip


def chromium_path() -> str:
    path = os.environ.get(CHROMIUM_VARIABLE, "")
    if path:
        return path
    if os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}:
        pytest.fail(f"{CHROMIUM_VARIABLE} is not set: CI must run the browser tests (see .ci/run)")
    pytest.skip(f"{CHROMIUM_VARIABLE} is not set: no Chromium to test the page with")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    path = chromium_path()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=path, args=list(ARGS))
        try:
            yield browser
        finally:
            await browser.close()
