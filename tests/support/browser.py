"""Debian's Chromium under Playwright, and the steps that get a code-server workbench usable.

Playwright's own browser download does not work on these machines, so every browser test launches
/usr/bin/chromium through `executable_path`, with the flags that keep it from phoning home (no
component updates, no sync, no QUIC) and from needing a GPU or a sandbox (we run as root).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "WATCH_OVERLAY",
    "chromium",
    "open_workbench",
    "wait_for_title",
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Debian Chromium, closed (with its driver) when the block ends, even on failure."""
    _require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: run `bash scripts/install-debian-deps.sh`")


async def open_workbench(
    page: Page, url: str, password: str, *, timeout_ms: float = 60_000
) -> None:
    """Log in to code-server at `url` and wait until the workbench is usable: the workbench shell is
    visible and the explorer lists the workspace folder's files."""
    await page.goto(url, timeout=timeout_ms)
    if "/login" in page.url:
        await page.fill("input[name=password]", password)
        await page.click("#submit, button[type=submit], input[type=submit]")
    await page.wait_for_selector(".monaco-workbench", state="visible", timeout=timeout_ms)
    # The explorer's rows appear only after the remote file system answered: the earliest moment a
    # user could open a file.
    await page.wait_for_selector(
        ".explorer-folders-view .monaco-list-row", state="visible", timeout=timeout_ms
    )


# Reports, in every document the tab loads, that the watcher's transition overlay was shown.
WATCH_OVERLAY = """
(() => {
  let reported = false;
  setInterval(() => {
    if (!reported && document.querySelector('.dumont-watcher-overlay')) {
      reported = true;
      window.dumontSaw('dumont-watcher-overlay');
    }
  }, 50);
})();
"""


async def wait_for_title(page: Page, name: str, timeout_s: float) -> float:
    """Until the workbench's title names machine ``name`` (tests.support.codeserver's
    titled_settings); returns when, by time.monotonic()."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # the page is mid-navigation
            if f"dumont-{name}" in await page.title():
                return time.monotonic()
        await page.wait_for_timeout(100)
    raise AssertionError(f"the workbench never showed dumont-{name}; title: {await page.title()}")
