"""The dashboard in Debian's Chromium: live updates, the token prompt, failover and failback.

``DUMONT_UPDATE_SCREENSHOTS=1`` also writes docs/screenshots/dashboard.png.
"""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Page, expect

from proxy.config import PricesConfig
from proxy.pages import TipCounts
from tests.support.browser import CHROMIUM, chromium
from tests.support.proxies import ProxyFactory, Upstreams, control_url, public_url, url_of

TOKEN = "dashboard-token"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "dashboard.png"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]


class StaticTips:
    """Stands in for the transition page's TipBook: the dashboard only calls snapshot()."""

    def snapshot(self) -> dict[str, TipCounts]:
        return {
            "a-reload-explained": TipCounts(impressions=48, clicks=7),
            "b-keyboard-shortcut": TipCounts(impressions=51, clicks=12),
        }


async def submit_token(page: Page, token: str) -> None:
    await expect(page.locator("#token-form")).to_be_visible()
    await page.fill("#token", token)
    await page.click("#token-form button[type=submit]")


async def test_dashboard_live_and_buttons(upstreams: Upstreams, make_proxy: ProxyFactory) -> None:
    expect.set_options(timeout=15_000)  # generous: the test machine is often loaded
    gpu, cpu = upstreams
    prices = PricesConfig(standby_per_hour=0.005, gpu_per_hour=0.45, downtime_per_minute=0.5)
    server = await make_proxy(url_of(gpu), url_of(cpu), admin_token=TOKEN, prices=prices)
    server.board.tips = StaticTips()
    control = control_url(server)
    async with aiohttp.ClientSession() as session, chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(str(control / "dashboard"))
        serving = page.locator("#serving")
        await expect(serving).to_have_text("gpu (primary)")
        await expect(page.locator('.backend[data-role="primary"] polyline').first).to_be_attached()
        await expect(page.locator("#tips-body")).to_contain_text("b-keyboard-shortcut")
        await expect(page.locator("#tips-body")).to_contain_text("23.5 %")  # 12 / 51

        # Provisioning's report shows up without a reload.
        async with session.put(
            control / "admin/sync",
            json={"state": "syncing", "lag_seconds": 0.42},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r:
            assert r.status == 200
        await expect(page.locator("#sync-lag")).to_have_text("420 ms")
        await expect(page.locator("#sync-state")).to_have_text("syncing")

        # The token is asked for, never embedded; a wrong one is refused and asked again.
        assert TOKEN not in await page.content()
        await page.click("#failover")
        await submit_token(page, "wrong")
        await expect(page.locator("#action-result")).to_contain_text("refused")
        await submit_token(page, TOKEN)
        await expect(serving).to_have_text("cpu (standby)")
        await expect(page.locator("#switches-body")).to_contain_text("admin: failover requested")
        assert await page.evaluate("sessionStorage.getItem('dumont-admin-token')") == TOKEN

        # Failback with the stored token: no prompt this time.
        await expect(page.locator("#failback")).to_be_enabled()
        await page.click("#failback")
        await expect(serving).to_have_text("gpu (primary)")
        await expect(page.locator("#token-form")).to_be_hidden()

        # A real interruption: the primary dies; the standby serves, the savings count it.
        async with session.get(public_url(server) / "before") as r:
            assert (await r.json())["backend"] == "gpu"
        await gpu.close()
        await expect(serving).to_have_text("cpu (standby)", timeout=10_000)
        async with session.get(public_url(server) / "after") as r:
            assert (await r.json())["backend"] == "cpu"
        await expect(page.locator("#savings-facts")).to_contain_text("Interruptions survived1")
        await expect(page.locator('.backend[data-role="primary"] .latency')).to_have_text("down")
        await expect(page.locator("#switches-body tr")).to_have_count(3)
        assert errors == []
        if os.environ.get("DUMONT_UPDATE_SCREENSHOTS") == "1":
            await page.wait_for_timeout(1500)  # a few more sparkline points
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)


async def test_no_token_asked_when_the_listener_has_none(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    server = await make_proxy(url_of(gpu), url_of(cpu))  # loopback, no admin token
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(str(control_url(server) / "dashboard"))
        await expect(page.locator("#serving")).to_have_text("gpu (primary)")
        await page.click("#failover")
        await expect(page.locator("#serving")).to_have_text("cpu (standby)")
        await expect(page.locator("#token-form")).to_be_hidden()
