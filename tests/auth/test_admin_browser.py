"""An admin's Chromium at /__dumont/admin/: Debian's Chromium signs in through the real
oidc-provider's screens, lands on the workspace's dashboard, presses "Fail over to standby", and
the switch happens: dashboard.js sent the page's CSRF token under the dashboard's strict CSP."""

from __future__ import annotations

import pytest
from playwright.async_api import async_playwright, expect

from tests.auth.conftest import ALICE, AuthBed
from tests.auth.idp import running_provider, signing_key
from tests.auth.test_admin_surface import PATIENT
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.oidc, pytest.mark.timeout(120)]

ACCOUNTS = {"carol": {"email": "carol@example.com", "email_verified": True, "groups": []}}
PAGE = "/__dumont/admin/dashboard/workspaces/alice"


async def test_an_admin_fails_over_from_the_dashboard_in_chromium(auth_bed: AuthBed) -> None:
    with running_provider(
        auth_bed.redirect_uris, auth_bed.post_logout_uris, ACCOUNTS, [signing_key()]
    ) as issuer:
        server = await auth_bed.make(issuer, admins=("carol@example.com",), proxy=PATIENT)
        origin = auth_bed.origin(ALICE)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True,
                args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {ALICE} 127.0.0.1"],
            )  # fmt: skip
            try:
                page = await browser.new_page()
                errors: list[str] = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                await page.goto(origin + PAGE, timeout=30_000)
                await page.fill("input[name=login]", "carol", timeout=30_000)
                await page.fill("input[name=password]", "anything")
                await page.click("button[type=submit]")
                await page.click("button[type=submit]", timeout=30_000)  # consent
                await page.wait_for_url(origin + PAGE, timeout=30_000)
                await expect(page.locator("#admin-email")).to_have_text("carol@example.com")
                button = page.locator("#failover")
                await expect(button).to_be_enabled(timeout=10_000)  # the first poll came back
                await button.click()
                await expect(page.locator("#machine-state")).to_have_text(
                    "serving standby", timeout=10_000
                )
                await expect(page.locator("#action-result")).to_have_text("failover requested")
                assert server.sites.get("alice").workspace.machine.state == "serving_standby"
                assert server.auth is not None
                metrics = server.auth.metrics.render().decode()
                assert "dumont_auth_admin_actions_total 1.0" in metrics
                assert not [e for e in errors if "Content Security Policy" in e], errors
            finally:
                await browser.close()
