"""The user, as Chromium under Playwright: keystrokes and shortcuts in code-server's workbench.

Every action goes through the page as a person would do it (Quick Open, the explorer's New File
box, typing, Ctrl+S); nothing reaches into the IDE's internals. The only script evaluated in the
page is a marker (``window.__dumontBeforeFault``) that tells a reloaded page from the one that was
open at the fault.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page

from tests.support.browser import open_workbench

__all__ = ["BrowserLog", "User"]

EXPLORER_ROW = ".explorer-folders-view .monaco-list-row"
EDITOR_LINES = ".editor-instance .monaco-editor .view-lines"
MARKER = "__dumontBeforeFault"


def _plain(text: str) -> str:
    return text.replace("\u00a0", " ")


@dataclass
class BrowserLog:
    """What the browser saw go wrong, with wall-clock times."""

    failed: list[tuple[float, str, str]] = field(default_factory=list)  # (at, url, why)
    server_errors: list[tuple[float, str, int]] = field(default_factory=list)
    websockets_closed: list[tuple[float, str]] = field(default_factory=list)
    navigations: list[tuple[float, str]] = field(default_factory=list)
    # The watcher's event stream (/__dumont/events): when each subscription started and ended.
    events: list[tuple[float, str]] = field(default_factory=list)
    # The top document's requests and answers: splits a reload into "asked" and "served".
    documents: list[tuple[float, str]] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on(
            "requestfailed",
            lambda r: self.failed.append((time.time(), r.url, r.failure or "")),
        )
        page.on(
            "response",
            lambda r: (
                self.server_errors.append((time.time(), r.url, r.status))
                if r.status >= 500
                else None
            ),
        )
        page.on(
            "websocket",
            lambda ws: ws.on(
                "close", lambda w: self.websockets_closed.append((time.time(), w.url))
            ),
        )
        page.on(
            "request",
            lambda r: (
                self.events.append((time.time(), "open")) if "/__dumont/events" in r.url else None
            ),
        )
        page.on(
            "requestfailed",
            lambda r: (
                self.events.append((time.time(), f"failed {r.failure}"))
                if "/__dumont/events" in r.url
                else None
            ),
        )
        page.on(
            "request",
            lambda r: (
                self.documents.append((time.time(), "requested"))
                if r.is_navigation_request() and r.frame.parent_frame is None
                else None
            ),
        )
        page.on(
            "response",
            lambda r: (
                self.documents.append((time.time(), f"answered {r.status}"))
                if r.request.is_navigation_request() and r.frame.parent_frame is None
                else None
            ),
        )
        page.on(
            "framenavigated",
            lambda f: (
                self.navigations.append((time.time(), f.url)) if f.parent_frame is None else None
            ),
        )

    def after(self, at: float) -> dict[str, object]:
        failed = [(u, why) for t, u, why in self.failed if t >= at]
        errors = [(u, s) for t, u, s in self.server_errors if t >= at]
        return {
            "failed_requests": len(failed) + len(errors),
            "network_failures": len(failed),
            "http_5xx": len(errors),
            "examples": [f"{why or 'failed'} {u[:120]}" for u, why in failed[:5]]
            + [f"{s} {u[:120]}" for u, s in errors[:5]],
            "websockets_closed": sum(1 for t, _ in self.websockets_closed if t >= at),
            "page_loads": sum(1 for t, _ in self.navigations if t >= at),
            "event_stream_s": [f"{t - at:.1f} {w}" for t, w in self.events if t >= at - 1][:20],
            "document_s": [f"{t - at:.1f} {w}" for t, w in self.documents if t >= at][:10],
        }


class User:
    def __init__(self, page: Page, password: str) -> None:
        self.page = page
        self.password = password

    async def open(self, url: str, timeout_ms: float = 90_000) -> None:
        await open_workbench(self.page, url, self.password, timeout_ms=timeout_ms)

    async def open_file(self, name: str, timeout_ms: float = 60_000) -> None:
        """Click the file in the explorer (the first level of the workspace)."""
        row = self.page.locator(f'{EXPLORER_ROW}[aria-label^="{name}"]').first
        await row.click(timeout=timeout_ms)
        await self.wait_active_tab(name, timeout_ms)

    async def quick_open(self, name: str, timeout_ms: float = 60_000) -> None:
        page = self.page
        await page.keyboard.press("Control+P")
        box = page.locator(".quick-input-widget input")
        await box.wait_for(state="visible", timeout=timeout_ms)
        await box.fill(name)
        row = page.locator(".quick-input-list .monaco-list-row", has_text=name).first
        await row.wait_for(state="visible", timeout=timeout_ms)
        await page.keyboard.press("Enter")
        await self.wait_active_tab(name, timeout_ms)

    async def wait_active_tab(self, name: str, timeout_ms: float = 60_000) -> None:
        tab = self.page.locator(f'.tabs-container .tab.active[data-resource-name="{name}"]')
        await tab.wait_for(state="visible", timeout=timeout_ms)
        await self.page.locator(EDITOR_LINES).first.wait_for(state="visible", timeout=timeout_ms)

    async def new_file(self, name: str, timeout_ms: float = 60_000) -> None:
        """The explorer's New File box: type the name, Enter; the new file opens in an editor."""
        page = self.page
        header = page.locator(
            ".pane-header", has=page.locator('a.action-label[aria-label^="New File"]')
        )
        await header.first.hover()
        button = page.locator('.pane-header a.action-label[aria-label^="New File"]').first
        await button.click(timeout=timeout_ms)
        box = page.locator(".explorer-folders-view .monaco-inputbox input")
        await box.wait_for(state="visible", timeout=timeout_ms)
        await page.keyboard.type(name)
        await page.keyboard.press("Enter")
        await self.wait_active_tab(name, timeout_ms)

    async def type_at_end(self, text: str) -> None:
        page = self.page
        await page.locator(EDITOR_LINES).first.click()
        await page.keyboard.press("Control+End")
        await page.keyboard.type(text, delay=5)

    async def save(self) -> None:
        await self.page.keyboard.press("Control+S")

    async def editor_text(self) -> str:
        return _plain(await self.page.locator(EDITOR_LINES).first.inner_text())

    async def wait_editor_contains(self, text: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in await self.editor_text():
                    return True
            except PlaywrightError:
                pass
            await self.page.wait_for_timeout(50)
        return False

    async def mark(self) -> None:
        await self.page.evaluate(f"window.{MARKER} = true")

    async def reloaded_and_ready(self) -> bool:
        """A page other than the marked one, the workbench up and the explorer listing files."""
        try:
            marked = await self.page.evaluate(f"window.{MARKER} === true")
            if marked:
                return False
            return await self.page.locator(EXPLORER_ROW).first.is_visible()
        except PlaywrightError:  # navigating
            return False

    async def reconnect_dialog_shown(self) -> bool:
        try:
            return await self.page.locator(
                ".dialog-message-text", has_text="reconnect"
            ).first.is_visible()
        except PlaywrightError:
            return False

    async def transition_shown(self) -> bool:
        """The watcher's overlay (the transition screen over the IDE), or the transition page."""
        try:
            if "/__dumont/transition" in self.page.url:
                return True
            return await self.page.locator(".dumont-watcher-overlay").first.is_visible()
        except PlaywrightError:
            return False

    async def dirty_tabs(self) -> list[str]:
        try:
            return [
                name or ""
                for name in await self.page.locator(".tabs-container .tab.dirty").evaluate_all(
                    "tabs => tabs.map(t => t.getAttribute('data-resource-name'))"
                )
            ]
        except PlaywrightError:
            return []

    async def open_tab(self, name: str, timeout_ms: float = 10_000) -> None:
        await self.page.locator(f'.tabs-container .tab[data-resource-name="{name}"]').first.click(
            timeout=timeout_ms
        )
        await self.wait_active_tab(name, timeout_ms)
