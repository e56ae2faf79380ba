"""Sign-in survives a failover, as the user sees it: Debian's Chromium signs in at the proxy
through the real oidc-provider's login and consent screens, opens a real code-server workbench,
the primary's process group is SIGKILLed, and the user lands in the standby's workbench still
signed in, with no click and no second visit to the provider (tests/proxy/test_browser_switch.py
is the same switch without sign-in)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from proxy.auth import AuthConfig
from proxy.config import Config, HealthConfig, HostPort, workspace_setting
from proxy.server import ProxyServer
from proxy.workspaces.spec import parse_workspace
from tests.auth.conftest import keys_file
from tests.auth.idp import CLIENT_ID, CLIENT_SECRET, running_provider, signing_key
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, wait_for_title
from tests.support.codeserver import CodeServer, code_server_pair
from tests.support.ports import free_port

pytestmark = [
    pytest.mark.codeserver, pytest.mark.browser, pytest.mark.oidc, pytest.mark.slow,
    pytest.mark.timeout(420),
]  # fmt: skip

PASSWORD = "signin-switch-password"
HOST = "ide.test"


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[dict[str, CodeServer]]:
    with code_server_pair(tmp_path, PASSWORD) as started:
        yield started


async def test_signed_in_user_lands_in_the_standby_still_signed_in(
    tmp_path: Path, machines: dict[str, CodeServer]
) -> None:
    gpu, cpu = machines["gpu"], machines["cpu"]
    port = free_port()
    origin = f"http://{HOST}:{port}"
    accounts = {"alice": {"email": "alice@example.com", "email_verified": True}}
    with running_provider(
        [f"{origin}/__dumont/auth/callback"], [f"{origin}/__dumont/auth/signed-out"], accounts,
        [signing_key()],
    ) as issuer:  # fmt: skip
        spec = parse_workspace(
            "ide",
            {"hosts": [HOST], "primary": gpu.url, "standby": cpu.url,
             "owners": ["alice@example.com"]},
            workspace_setting,
        )  # fmt: skip
        config = Config(
            workspaces=(spec,),
            listen=HostPort("127.0.0.1", port),
            control_listen=HostPort("127.0.0.1", 0),
            health=HealthConfig(interval=0.5, timeout=5.0, fall=3, rise=2),
            failback="manual",
            shutdown_timeout=2.0,
            auth=AuthConfig(
                mode="oidc", issuer=issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                scopes=("openid", "email"), allowed_emails=("alice@example.com",),
                cookie_keys_file=str(keys_file(tmp_path)),
            ),
        )  # fmt: skip
        proxy = ProxyServer(config)
        await proxy.start()
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True,
                    args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {HOST} 127.0.0.1"],
                )  # fmt: skip
                try:
                    await _sign_in_then_fail_over(browser, origin, issuer, proxy, gpu)
                finally:
                    await browser.close()
        finally:
            await proxy.stop()


async def _sign_in_then_fail_over(
    browser: Browser, origin: str, issuer: str, proxy: ProxyServer, gpu: CodeServer
) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    at_provider: list[str] = []
    page.on(
        "framenavigated",
        lambda frame: at_provider.append(frame.url) if frame.url.startswith(issuer) else None,
    )
    await page.goto(origin + "/", timeout=60_000)
    # oidc-provider's development screens: any login, any password, then consent.
    await page.fill("input[name=login]", "alice", timeout=30_000)
    await page.fill("input[name=password]", "anything")
    await page.click("button[type=submit]")
    await page.click("button[type=submit]", timeout=30_000)  # "Continue" on the consent screen
    # Back at the proxy, signed in: code-server's own password page comes next.
    await page.wait_for_url(f"{origin}/**", timeout=60_000)
    session = [c for c in await page.context.cookies() if c["name"] == "dumont_session"]
    assert len(session) == 1
    assert session[0]["httpOnly"]
    assert session[0]["sameSite"] == "Lax"
    if "/login" in page.url:
        await page.fill("input[name=password]", PASSWORD)
        await page.click("#submit, button[type=submit], input[type=submit]")
    await page.wait_for_selector(".monaco-workbench", state="visible", timeout=120_000)
    await wait_for_title(page, "gpu", 60)
    signed_in_visits = len(at_provider)
    assert signed_in_visits > 0

    killed = time.monotonic()
    gpu.kill()  # SIGKILL of the process group: a spot interruption
    await wait_for_title(page, "cpu", 120)
    row = page.locator('.explorer-folders-view .monaco-list-row[aria-label^="train.py"]')
    await row.wait_for(state="visible", timeout=120_000)
    print(f"kill -> standby workbench, still signed in: {time.monotonic() - killed:.2f} s")
    assert page.url.startswith(origin)
    assert len(at_provider) == signed_in_visits  # never sent back to the provider
    site = proxy.sites.get("ide")
    assert site.workspace.machine.active == "standby"
