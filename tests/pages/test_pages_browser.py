"""The transition page and the watcher in Debian's Chromium, against the real pages routes over a
fake SwitchView: the page goes back to the user's URL once a machine serves, the watcher covers the
IDE during a switch and reloads exactly once, and the failback notice asks the proxy."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, Route

from proxy.pages import PagesConfig, SwitchSnapshot
from tests.pages.conftest import IDE_MARKER, make_app
from tests.pages.fake_view import (
    CONNECTING,
    FAILBACK_OFFERED,
    SERVING_STANDBY,
    SWITCHING,
    FakeSwitchView,
)
from tests.support.browser import chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ServerMaker = Callable[[web.Application], Awaitable[TestServer]]
# Set to a directory (docs/screenshots) to keep the screenshots; they always go to tmp_path too.
SCREENSHOT_DIR_ENV = "DUMONT_SCREENSHOT_DIR"


@pytest.fixture
async def base_url(aiohttp_server: ServerMaker, view: FakeSwitchView) -> str:
    server = await aiohttp_server(make_app(view, PagesConfig()))
    return str(server.make_url("")).rstrip("/")


async def test_the_page_returns_to_the_exact_url_within_3_s_of_ready(
    base_url: str, view: FakeSwitchView
) -> None:
    view.set(SWITCHING)
    where = f"{base_url}/stable-abc/some/path?folder=/home/me#L12"
    async with chromium() as browser:
        page = await browser.new_page()
        response = await page.goto(where)
        assert response is not None
        assert response.status == 503
        await page.wait_for_selector("#dumont.phase-switching.heading-standby")
        view.set(CONNECTING)
        await page.wait_for_selector("#dumont.phase-connecting")
        ready_at = time.time()
        view.set(SERVING_STANDBY)
        await page.wait_for_selector("#dumont.phase-ready", timeout=3000)
        await page.wait_for_selector("#ide", timeout=5000)
        assert page.url == where
        assert await page.inner_text("#ide") == f"{IDE_MARKER} on standby"
        # Measured by the browser (the moment the IDE document was parsed), not by our polling.
        back_at = await page.evaluate(
            "(performance.timeOrigin + performance.getEntriesByType('navigation')[0]"
            ".domContentLoadedEventEnd) / 1000"
        )
    took = back_at - ready_at
    print(f"back on the IDE {took:.2f} s after the target was ready")
    assert took < 3, f"back {took:.2f} s after the target was ready"


async def test_the_watcher_covers_the_ide_and_reloads_once(
    base_url: str, view: FakeSwitchView
) -> None:
    async with chromium() as browser:
        page = await browser.new_page()
        loads: list[str] = []
        page.on("load", lambda _: loads.append(page.url))
        await page.goto(f"{base_url}/?folder=/w")
        assert await page.inner_text("#ide") == f"{IDE_MARKER} on primary"
        await _wait_for_subscriber(view)

        view.set(SWITCHING)
        # The overlay is the transition page in a frame, over the IDE, within a second or so.
        await page.wait_for_selector(".dumont-watcher-overlay.is-visible", timeout=2000)
        frame = page.frame_locator(".dumont-watcher-frame")
        await frame.locator("#dumont.phase-switching").wait_for(timeout=3000)

        view.set(SERVING_STANDBY)
        await page.wait_for_function(
            "document.querySelector('#ide')?.textContent.endsWith('on standby')", timeout=3000
        )
        await _wait_for_subscriber(view)
        # Let a few more events arrive: a loop would reload again.
        view.set(SERVING_STANDBY)
        await page.wait_for_timeout(1500)
        assert loads == [f"{base_url}/?folder=/w"] * 2
        assert await page.locator(".dumont-watcher-overlay").count() == 0


async def test_the_failback_notice_asks_the_proxy(base_url: str, view: FakeSwitchView) -> None:
    view.set(SERVING_STANDBY)
    async with chromium() as browser:
        page = await browser.new_page(extra_http_headers={"Accept-Language": "pt-BR"})
        await page.goto(f"{base_url}/")
        await _wait_for_subscriber(view)
        view.set(FAILBACK_OFFERED)
        notice = page.locator(".dumont-watcher-notice")
        await notice.wait_for(timeout=3000)
        assert await notice.locator("p").inner_text() == "Sua máquina GPU voltou — trocar agora?"
        await notice.get_by_role("button", name="Trocar agora").click()
        await notice.wait_for(state="detached", timeout=3000)
    assert view.failback_requests == 1


@pytest.mark.parametrize("language", ["en", "pt-BR"])
async def test_screenshots_and_reduced_motion(
    base_url: str, view: FakeSwitchView, language: str, tmp_path: Path
) -> None:
    keep = os.environ.get(SCREENSHOT_DIR_ENV)  # must exist
    states: dict[str, tuple[SwitchSnapshot, str]] = {
        "switching": (SWITCHING, "phase-switching"),
        "connected": (SERVING_STANDBY, "phase-ready"),
        "failback": (
            SwitchSnapshot(2, "switching", None, "primary", True, True, False),
            "phase-connecting.heading-primary",
        ),
    }
    async with chromium() as browser:
        # Still frames: without animations Chromium's software renderer paints the blurred glass
        # once instead of every frame, which keeps this test fast on a busy 2-core machine.
        context = await browser.new_context(
            viewport={"width": 1024, "height": 640},
            extra_http_headers={"Accept-Language": language},
            reduced_motion="reduce",
        )
        page = await context.new_page()
        # Once connected the page heads back to "/". A 204 answer cancels a navigation and the
        # browser stays on the current document, so the connected state stays on screen.
        await page.route(f"{base_url}/", lambda route: route.fulfill(status=204))
        for name, (snapshot, selector) in states.items():
            view.set(snapshot)
            await page.goto(f"{base_url}/__dumont/transition")
            await page.wait_for_selector(f"#dumont.{selector}")
            shot = tmp_path / f"transition-{name}-{language}.png"
            await page.screenshot(path=shot)
            assert _png_size(shot) == (1024, 640)
            if keep:
                await asyncio.to_thread(shutil.copyfile, shot, Path(keep) / shot.name)
        assert await _animation(page) == "none"
        await page.emulate_media(reduced_motion="no-preference")
        assert await _animation(page) != "none"
        await context.close()


async def _animation(page: Page) -> str:
    name: str = await page.evaluate(
        "getComputedStyle(document.querySelector('.dumont-dot'), '::after').animationName"
    )
    return name


async def _wait_for_subscriber(view: FakeSwitchView) -> None:
    """Until the page's event stream is open, a change would only reach it as its first event."""
    deadline = time.monotonic() + 5
    while view.subscribers == 0:
        assert time.monotonic() < deadline, "the page never subscribed to /__dumont/events"
        await asyncio.sleep(0.02)


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


@pytest.mark.parametrize(
    ("language", "park", "text", "button", "counter"),
    [
        (
            "en",
            {"phase": "idle", "detail": "", "idle_min": 28, "park_in_min": 2},
            "GPU idle for 28 min: parking it in 2 min.",
            "Keep it",
            "keep_requests",
        ),
        (
            "pt-BR",
            {"phase": "parked", "detail": "", "idle_min": None, "park_in_min": None},
            "GPU estacionada: você está na máquina CPU, seus arquivos estão aqui.",
            "Trazer a GPU de volta",
            "resume_requests",
        ),
    ],
    ids=["idle-keep-it", "parked-bring-it-back"],
)
async def test_the_park_notice_and_its_button(
    base_url: str,
    view: FakeSwitchView,
    language: str,
    park: dict[str, object],
    text: str,
    button: str,
    counter: str,
) -> None:
    view.set(SERVING_STANDBY)
    async with chromium() as browser:
        page = await browser.new_page(extra_http_headers={"Accept-Language": language})
        await page.goto(f"{base_url}/")
        await _wait_for_subscriber(view)
        view.set(dataclasses.replace(SERVING_STANDBY, park=park))
        notice = page.locator(".dumont-watcher-notice.dumont-park")
        await notice.wait_for(timeout=3000)
        assert await notice.locator("p").inner_text() == text
        await notice.get_by_role("button", name=button).click()
        for _ in range(50):
            if getattr(view, counter):
                break
            await asyncio.sleep(0.05)
        assert getattr(view, counter) == 1
        # The phase the proxy reports next replaces the text; no park, no notice.
        view.set(SERVING_STANDBY)
        await notice.wait_for(state="detached", timeout=3000)


@pytest.mark.parametrize(
    ("language", "resuming", "resumed"),
    [
        ("en", "Bringing the GPU back: filling the GPU with your files", "GPU back in 19 s."),
        (
            "pt-BR",
            "Trazendo a GPU de volta: copiando seus arquivos para a GPU",
            "GPU de volta em 19 s.",
        ),
    ],
    ids=["en", "pt-BR"],
)
async def test_the_resume_shows_its_step_and_then_the_time_it_took(
    base_url: str, view: FakeSwitchView, language: str, resuming: str, resumed: str
) -> None:
    notice_of: dict[str, object] = {"detail": "filling the GPU with your files", "idle_min": None}
    notice_of |= {"park_in_min": None, "standby": "present"}
    view.set(SERVING_STANDBY)
    async with chromium() as browser:
        page = await browser.new_page(extra_http_headers={"Accept-Language": language})
        await page.goto(f"{base_url}/")
        await _wait_for_subscriber(view)
        park = notice_of | {"phase": "resuming", "step": "filling", "resume_s": None}
        view.set(dataclasses.replace(SERVING_STANDBY, park=park))
        text = page.locator(".dumont-watcher-notice.dumont-park p")
        await text.wait_for(timeout=3000)
        assert await text.inner_text() == resuming
        assert await page.locator(".dumont-watcher-notice.dumont-park button").count() == 0
        done = notice_of | {"phase": "resumed", "detail": "GPU back in 19 s", "step": None}
        view.set(dataclasses.replace(SERVING_STANDBY, park=done | {"resume_s": 19}))
        await page.wait_for_function(
            "t => document.querySelector('.dumont-watcher-notice.dumont-park p').textContent === t",
            arg=resumed,
            timeout=3000,
        )


async def test_the_park_notice_shows_once_the_reload_after_a_switch_uncovers_the_ide(
    base_url: str, view: FakeSwitchView
) -> None:
    """A park switches to the standby: the reloaded page is covered until it has rendered, and the
    stream sends nothing new after its first event, so the notice must come from that one."""
    parked: dict[str, object] = {
        "phase": "parked",
        "detail": "",
        "idle_min": None,
        "park_in_min": None,
    }
    async with chromium() as browser:
        page = await browser.new_page()

        async def like_a_workbench(route: Route) -> None:
            # code-server's document: its configuration tag, and a UI its scripts build later.
            response = await route.fetch()
            body = (await response.text()).replace(
                "</head>",
                '<meta id="vscode-workbench-web-configuration"></head>'
                "<script>setTimeout(() => document.body.insertAdjacentHTML('beforeend',"
                ' \'<div class="monaco-workbench"><div class="part editor"></div></div>\')'
                ", 1500)</script>",
            )
            await route.fulfill(response=response, body=body)

        await page.route(f"{base_url}/?folder=/w", like_a_workbench)
        await page.goto(f"{base_url}/?folder=/w")
        await _wait_for_subscriber(view)
        view.set(SWITCHING)
        await page.wait_for_selector(".dumont-watcher-overlay.is-visible", timeout=2000)
        view.set(dataclasses.replace(SERVING_STANDBY, park=parked))
        await page.wait_for_function(
            "document.querySelector('#ide')?.textContent.endsWith('on standby')", timeout=3000
        )
        notice = page.locator(".dumont-watcher-notice.dumont-park p")
        await notice.wait_for(timeout=5000)
        assert await notice.inner_text() == (
            "GPU parked: you're on the CPU machine, your files are here."
        )
        assert await page.locator(".dumont-watcher-overlay").count() == 0
