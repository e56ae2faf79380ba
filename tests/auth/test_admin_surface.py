"""Admins at /__dumont/admin/ with a browser session, against the real oidc-provider (npm),
driven over HTTP as a browser would: the dashboard, a command that takes effect, the CSRF token
and the origin check refusing what they must, a non-admin's 403, and the control listener's
bearer token working as before."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import httpx
import pytest

from proxy.config import HealthConfig
from proxy.server import ProxyServer
from tests.auth.conftest import ALICE, BOB, AuthBed
from tests.auth.idp import UserAgent, running_provider, signing_key
from tests.support.proxies import control_url

pytestmark = [pytest.mark.oidc, pytest.mark.timeout(90)]

ACCOUNTS = {
    "alice": {"email": "alice@example.com", "email_verified": True, "groups": []},
    "carol": {"email": "carol@example.com", "email_verified": True, "groups": []},
    "dave": {"email": "dave@example.com", "email_verified": True, "groups": ["ops"]},
}
ADMINS = ("carol@example.com", "group:ops")
TOKEN = "a-bearer-token-for-automation"
# Checks that a loaded machine does not fail: a backend marked down mid-test would move the
# workspace by itself, and these tests are about who may move it.
PATIENT = {"health": HealthConfig(interval=0.3, timeout=3.0, fall=5, rise=2, warmup_path=None)}
JSON = {"Accept": "application/json"}
PAGE = "/__dumont/admin/dashboard/workspaces/alice"
FAILOVER = "/__dumont/admin/admin/workspaces/alice/failover"
FAILBACK = "/__dumont/admin/admin/workspaces/alice/failback"


def _metric(server: ProxyServer, line: str) -> float:
    assert server.auth is not None
    text = server.auth.metrics.render().decode()
    found = re.search(rf"^{re.escape(line)} (\S+)$", text, re.MULTILINE)
    assert found is not None, text
    return float(found[1])


def _state(server: ProxyServer) -> str:
    return str(server.sites.get("alice").workspace.machine.state)


async def _serving_primary(server: ProxyServer) -> None:
    deadline = time.monotonic() + 15
    while _state(server) != "serving_primary":
        assert time.monotonic() < deadline, _state(server)
        await asyncio.sleep(0.05)


async def _csrf_token(agent: UserAgent, origin: str) -> str:
    page = await agent.navigate(origin + PAGE)
    assert page.status_code == 200, page.text[:300]
    found = re.search(r'data-csrf-token="([^"]+)"', page.text)
    assert found is not None, page.text[:1000]
    return found[1]


async def test_an_admin_presses_a_button_and_it_takes_effect(
    auth_bed: AuthBed, agent: UserAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "dumont.auth")
    with running_provider(
        auth_bed.redirect_uris, auth_bed.post_logout_uris, ACCOUNTS, [signing_key()]
    ) as issuer:
        server = await auth_bed.make(issuer, admins=ADMINS, proxy={"admin_token": TOKEN, **PATIENT})
        await _serving_primary(server)
        alice = auth_bed.origin(ALICE)
        # No session: a call gets 401, a navigation goes to sign in and comes back to the page.
        assert (await agent.get(alice + PAGE + "/state", headers=JSON)).status_code == 401
        done = await agent.sign_in(ALICE, PAGE, "carol")  # carol owns no workspace: an admin
        assert done.status_code == 302
        assert done.headers["location"] == PAGE
        home = await agent.navigate(alice + "/__dumont/admin/")
        assert home.headers["location"] == "/__dumont/admin/dashboard"
        page = await agent.navigate(alice + PAGE)
        assert page.status_code == 200
        assert "carol@example.com" in page.text
        assert "/__dumont/admin/dashboard/static/dashboard.js" in page.text
        assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self'
        token = await _csrf_token(agent, alice)
        script = await agent.get(alice + "/__dumont/admin/dashboard/static/dashboard.js")
        assert "X-CSRF-Token" in script.text
        state = await agent.get(alice + PAGE + "/state", headers=JSON)
        assert state.json()["state"] == "serving_primary"
        overview = await agent.get(alice + "/__dumont/admin/dashboard/overview", headers=JSON)
        assert {w["url"] for w in overview.json()["workspaces"]} == {
            "/__dumont/admin/dashboard/workspaces/alice",
            "/__dumont/admin/dashboard/workspaces/bob",
        }
        # The button: what dashboard.js sends from the page.
        browser_post = {"Origin": alice, "Sec-Fetch-Site": "same-origin"}
        client = agent.client(alice)
        pressed = await client.post(FAILOVER, headers={**browser_post, "X-CSRF-Token": token})
        assert pressed.status_code == 200, pressed.text
        assert pressed.json()["state"] == "serving_standby"
        switch = pressed.json()["switches"][-1]
        assert switch["reason"] == "admin: failover requested by carol@example.com"
        assert _state(server) == "serving_standby"
        assert any(
            "carol@example.com POST " + FAILOVER in r.getMessage() and "-> 200" in r.getMessage()
            for r in caplog.records
        )
        assert _metric(server, "dumont_auth_admin_actions_total") == 1.0

        # Forged or missing token, or another origin: 403 with one line, nothing changed.
        refusals = [
            ({**browser_post, "X-CSRF-Token": token[:-2] + "xx"}, "csrf", "wrong X-CSRF-Token"),
            (browser_post, "csrf", "no X-CSRF-Token"),
            ({"Origin": "http://evil.test", "X-CSRF-Token": token}, "cross_site", "Origin"),
            ({"Sec-Fetch-Site": "cross-site", "Origin": alice, "X-CSRF-Token": token},
             "cross_site", "cross-site"),
            ({"Sec-Fetch-Site": "same-site", "Origin": auth_bed.origin(BOB),
              "X-CSRF-Token": token}, "cross_site", "same-site"),
        ]  # fmt: skip
        for headers, _, says in refusals:
            refused = await client.post(FAILBACK, headers=headers)
            assert refused.status_code == 403, refused.text
            body = refused.json()
            assert body["error"] == "CSRF check failed; nothing was changed"
            assert says in body["detail"]
            assert "\n" not in body["detail"]
            assert _state(server) == "serving_standby"
        assert _metric(server, 'dumont_auth_admin_refusals_total{reason="csrf"}') == 2.0
        assert _metric(server, 'dumont_auth_admin_refusals_total{reason="cross_site"}') == 3.0
        assert _metric(server, "dumont_auth_admin_actions_total") == 1.0
        # The token of another session does not do either (dave signs in elsewhere).
        dave = UserAgent(auth_bed.port)
        try:
            await dave.sign_in(ALICE, PAGE, "dave")  # an admin through group:ops
            dave_token = await _csrf_token(dave, alice)
            assert dave_token != token
            refused = await client.post(
                FAILBACK, headers={**browser_post, "X-CSRF-Token": dave_token}
            )
            assert refused.status_code == 403
        finally:
            await dave.close()
        # The bearer token on the public listener is no credential: sessions only there.
        stranger = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{auth_bed.port}",
            headers={"Host": f"{ALICE}:{auth_bed.port}"},
        )
        async with stranger:
            answer = await stranger.post(FAILBACK, headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 401
        assert _state(server) == "serving_standby"

        # Automation's bearer token on the control listener, exactly as before: no CSRF token.
        control = str(control_url(server))
        async with httpx.AsyncClient(base_url=control) as automation:
            refused = await automation.post("/admin/workspaces/alice/failback")
            assert refused.status_code == 401
            back = await automation.post(
                "/admin/workspaces/alice/failback", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert back.status_code == 200, back.text
        assert _state(server) in ("failing_back", "serving_primary")


async def test_a_signed_in_non_admin_gets_403(auth_bed: AuthBed, agent: UserAgent) -> None:
    with running_provider(
        auth_bed.redirect_uris, auth_bed.post_logout_uris, ACCOUNTS, [signing_key()]
    ) as issuer:
        server = await auth_bed.make(issuer, admins=ADMINS, proxy=PATIENT)
        await _serving_primary(server)
        alice = auth_bed.origin(ALICE)
        done = await agent.sign_in(ALICE, PAGE, "alice")  # alice owns the workspace: no admin
        assert done.status_code == 302
        page = await agent.navigate(alice + PAGE)
        assert page.status_code == 403
        assert "alice@example.com is not an admin" in page.text
        assert "transition.css" in page.text  # the message page, in the transition page's style
        assert "data-csrf-token" not in page.text
        call = await agent.get(alice + PAGE + "/state", headers=JSON)
        assert call.status_code == 403
        assert call.json()["error"] == "admins only"
        pressed = await agent.client(alice).post(
            FAILOVER, headers={"Origin": alice, "Sec-Fetch-Site": "same-origin"}
        )
        assert pressed.status_code == 403
        assert _state(server) == "serving_primary"
        assert _metric(server, 'dumont_auth_admin_refusals_total{reason="not_admin"}') == 3.0
        # Her own IDE is still hers: the admin surface changes nothing for owners.
        assert (await agent.navigate(alice + "/")).status_code == 200


ADMIN_HOST = "dumont.ide.test"


async def test_admin_host_keeps_the_surface_off_every_workspaces_origin(
    auth_bed: AuthBed, agent: UserAgent
) -> None:
    """A backend's pages share the origin of /__dumont/admin/ at its Host; admin_host moves the
    surface to a Host of its own, and keeps it shut if a workspace ever serves that Host."""
    admin = auth_bed.origin(ADMIN_HOST)
    with running_provider(
        [*auth_bed.redirect_uris, f"{admin}/__dumont/auth/callback"],
        auth_bed.post_logout_uris, ACCOUNTS, [signing_key()],
    ) as issuer:  # fmt: skip
        server = await auth_bed.make(issuer, admins=ADMINS, admin_host=ADMIN_HOST, proxy=PATIENT)
        await _serving_primary(server)
        # At a workspace's Host the surface is not there at all, signed in or not.
        assert (await agent.navigate(auth_bed.origin(ALICE) + PAGE)).status_code == 404
        done = await agent.sign_in(ADMIN_HOST, PAGE, "carol")
        assert done.headers["location"] == PAGE
        token = await _csrf_token(agent, admin)
        pressed = await agent.client(admin).post(
            FAILOVER,
            headers={"Origin": admin, "Sec-Fetch-Site": "same-origin", "X-CSRF-Token": token},
        )
        assert pressed.status_code == 200, pressed.text
        assert _state(server) == "serving_standby"
        # Someone gives a workspace that Host: the surface shuts rather than share its origin.
        control = str(control_url(server))
        async with httpx.AsyncClient(base_url=control) as automation:
            created = await automation.put(
                "/admin/workspaces/squatter",
                json={"hosts": [ADMIN_HOST], "primary": "http://127.0.0.1:9",
                      "standby": "http://127.0.0.1:10"},
            )  # fmt: skip
            assert created.status_code == 200, created.text
        shut = await agent.get(admin + PAGE + "/state", headers=JSON)
        assert shut.status_code == 403
        assert "give [auth] admin_host a name none serves" in shut.json()["detail"]
        assert _metric(server, 'dumont_auth_admin_refusals_total{reason="wrong_host"}') == 2.0
