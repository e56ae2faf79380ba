"""The park state on the proxy's side (issue 18), in process: provisioning's reports, Keep it,
the resume button in Debian's Chromium (its hook fails here, and the dashboard says why), the
metrics and the switchover's refusals."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from playwright.async_api import expect

from proxy.config import HooksConfig
from tests.support.browser import CHROMIUM, chromium
from tests.support.proxies import (
    ProxyFactory,
    Upstreams,
    control_url,
    make_proxy,
    upstreams,
    url_of,
)

__all__ = ["make_proxy", "upstreams"]  # fixtures, used by name

TOKEN = "park-dashboard-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_park_reports_keep_and_switchover_refusals(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    server = await make_proxy(url_of(gpu), url_of(cpu), admin_token=TOKEN)
    control = control_url(server)
    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.post(control / "admin/switchover") as r:
            assert r.status == 409
            assert "no switchover hook configured" in await r.text()
        idle = {"phase": "idle", "detail": "GPU idle for 28 min: parking it in 2 min",
                "idle_s": 1680, "park_in_s": 120, "park_after_s": 1800}  # fmt: skip
        async with session.put(control / "admin/park", json=idle) as r:
            assert r.status == 200
        async with session.post(control / "admin/park/keep") as r:
            body = await r.json()
            assert r.status == 200
        assert body["phase"] == "active"
        assert body["keep_until"] is not None
        for bad in ({"phase": "asleep"}, {"phase": "parked", "idle_s": -1}, ["parked"]):
            async with session.put(control / "admin/park", json=bad) as r:
                assert r.status == 400, bad
        parked = {"phase": "parked", "detail": "GPU parked", "outcome": "parked",
                  "gpu_per_hour": 0.45}  # fmt: skip
        async with session.put(control / "admin/park", json=parked) as r:
            assert r.status == 200
        async with session.post(control / "admin/park/keep") as r:
            assert r.status == 409  # nothing to keep: the GPU is parked
        async with session.get(control / "metrics") as r:
            metrics = await r.text()
        assert "dumont_gpu_parked 1.0" in metrics
        assert 'dumont_park_total{outcome="parked"} 1.0' in metrics
        async with session.get(control / "admin/status") as r:
            state = await r.json()
        assert state["park"]["phase"] == "parked"
        assert state["savings"]["gpu_parked_hours"] is not None


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
async def test_dashboard_shows_the_parked_gpu_and_a_failed_resume(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    expect.set_options(timeout=15_000)
    gpu, cpu = upstreams
    hooks = HooksConfig(resume="echo 'no GPU offer matches' >&2; exit 3")
    server = await make_proxy(url_of(gpu), url_of(cpu), admin_token=TOKEN, hooks=hooks)
    control = control_url(server)
    async with aiohttp.ClientSession(headers=AUTH) as session, chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(str(control / "dashboard"))
        await expect(page.locator("#park-phase")).to_have_text("active")
        await expect(page.locator("#resume")).to_be_hidden()

        detail = "GPU parked: you're on the CPU machine, your files are here"
        report = {"phase": "parked", "outcome": "parked", "gpu_per_hour": 0.45, "detail": detail}
        async with session.put(control / "admin/park", json=report) as r:
            assert r.status == 200
        await expect(page.locator("#park-phase")).to_have_text("parked")
        await expect(page.locator("#park-detail")).to_contain_text("your files are here")
        await expect(page.locator("#park-count")).to_have_text("1 parked, 0 failed, 0 refused")
        # The savings panel counts the parked hours at the GPU's price too.
        await expect(page.locator("#savings-facts")).to_contain_text("GPU cost saved by parking")
        await expect(page.locator("#savings-facts")).not_to_contain_text("set by the first park")
        async with session.put(control / "admin/park", json={"standby": "missing"}) as r:
            assert r.status == 200
        await expect(page.locator("#park-standby")).to_contain_text("MISSING")

        await page.click("#resume")
        await page.fill("#token", TOKEN)
        await page.click("#token-form button[type=submit]")
        await expect(page.locator("#action-result")).to_have_text("resume requested")
        # The hook failed before it could report: the proxy says so itself, in one line.
        await expect(page.locator("#park-phase")).to_have_text("resume failed")
        await expect(page.locator("#park-detail")).to_have_text("exit 3: no GPU offer matches")
        await expect(page.locator("#resume")).to_be_visible()  # try again
        assert errors == []


async def test_one_switchover_at_a_time_and_only_after_its_hook(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    hooks = HooksConfig(switchover='sleep 1; echo "flushed: $DUMONT_REASON"')
    server = await make_proxy(url_of(gpu), url_of(cpu), admin_token=TOKEN, hooks=hooks)
    control = control_url(server)
    async with aiohttp.ClientSession(headers=AUTH) as session:

        async def switchover() -> tuple[int, str]:
            body = {"reason": "maintenance"}
            async with session.post(control / "admin/switchover", json=body) as r:
                return r.status, await r.text()

        async with asyncio.TaskGroup() as group:
            first = group.create_task(switchover(), name="first-switchover")
            await asyncio.sleep(0.3)  # the first one's hook is running
            assert server.workspace.machine.active == "primary"  # nothing moves before it ends
            second = group.create_task(switchover(), name="second-switchover")
        code, text = second.result()
        assert code == 409
        assert "a switchover is already running" in text
        status, _ = first.result()
        assert status == 200
        assert server.workspace.machine.history[-1].reason == "switchover: maintenance"
