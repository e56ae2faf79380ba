"""Signing in through the proxy against the real oidc-provider (npm), driven over HTTP as a browser
would: its development login and consent screens, the code flow with PKCE, the session cookie,
owners, logout and revocation, a proxy restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.auth.conftest import ALICE, BOB, AuthBed
from tests.auth.idp import UserAgent, running_provider, signing_key

pytestmark = [pytest.mark.oidc, pytest.mark.timeout(60)]

ACCOUNTS = {
    "alice": {"email": "alice@example.com", "email_verified": True, "groups": []},
    "bob": {"email": "bob@example.com", "email_verified": True, "groups": []},
    "carol": {"email": "carol@example.com", "email_verified": True, "groups": ["admins"]},
    "mallory": {"email": "mallory@elsewhere.test", "email_verified": True, "groups": []},
}


async def test_sign_in_then_the_ide_then_logout(auth_bed: AuthBed, agent: UserAgent) -> None:
    key = signing_key()
    with running_provider(
        auth_bed.redirect_uris, auth_bed.post_logout_uris, ACCOUNTS, [key]
    ) as issuer:
        await auth_bed.make(issuer)
        alice = auth_bed.origin(ALICE)
        # A call without a session: 401 JSON, never the backend, never a redirect.
        call = await agent.get(f"{alice}/api/thing", headers={"Accept": "application/json"})
        assert call.status_code == 401
        assert call.json()["error"] == "sign in first"
        done = await agent.sign_in(ALICE, "/some/page?x=1", "alice")
        assert done.status_code == 302
        assert done.headers["location"] == "/some/page?x=1"
        cookie = done.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie
        page = await agent.navigate(f"{alice}/")
        assert page.status_code == 200
        assert "a1" in page.text  # alice's primary answered
        # The backend never sees the session's cookie; the IDE's own cookies pass.
        agent.client(alice).cookies.set("theme", "dark")
        echoed = (await agent.get(f"{alice}/echo")).json()
        assert [v for k, v in echoed["headers"] if k.lower() == "cookie"] == ["theme=dark"]
        # Logout: the session is revoked, the issuer's end-session endpoint is next, and it
        # sends the browser back to the proxy's signed-out page.
        cookie = agent.client(alice).cookies["dumont_session"]
        out = await agent.get(f"{alice}/__dumont/auth/logout")
        assert out.status_code == 302
        assert out.headers["location"].startswith(issuer)
        back = await agent.through_provider(out.headers["location"], "alice")
        assert back.startswith(f"{alice}/__dumont/auth/signed-out")
        signed_out = await agent.navigate(back)
        assert signed_out.status_code == 200
        assert "You are signed out" in signed_out.text
        assert (await agent.get(f"{alice}/api/thing")).status_code == 401
        replay = UserAgent(auth_bed.port)
        try:  # the cookie itself, kept by someone: revoked at the proxy
            replay.client(alice).cookies.set("dumont_session", cookie)
            assert (await replay.get(f"{alice}/api/thing")).status_code == 401
        finally:
            await replay.close()


async def test_a_non_owner_gets_the_403_page(auth_bed: AuthBed, agent: UserAgent) -> None:
    with running_provider(
        auth_bed.redirect_uris, auth_bed.post_logout_uris, ACCOUNTS, [signing_key()]
    ) as issuer:
        await auth_bed.make(issuer)
        done = await agent.sign_in(ALICE, "/", "bob")
        assert done.status_code == 302
        page = await agent.navigate(auth_bed.origin(ALICE) + "/")
        assert page.status_code == 403
        assert "does not own" in page.text
        assert "transition.css" in page.text
        call = await agent.get(auth_bed.origin(ALICE) + "/api")
        assert call.status_code == 403
        # bob's own workspace has no owners: open to everyone signed in (on its own host).
        done = await agent.sign_in(BOB, "/", "bob")
        assert (await agent.navigate(auth_bed.origin(BOB) + "/")).status_code == 200
        # a group owner: carol is in "admins"
        carol = UserAgent(auth_bed.port)
        try:
            await carol.sign_in(ALICE, "/", "carol")
            assert (await carol.navigate(auth_bed.origin(ALICE) + "/")).status_code == 200
        finally:
            await carol.close()


async def test_someone_not_allowed_cannot_sign_in(auth_bed: AuthBed, agent: UserAgent) -> None:
    with running_provider(
        auth_bed.redirect_uris, auth_bed.post_logout_uris, ACCOUNTS, [signing_key()]
    ) as issuer:
        server = await auth_bed.make(issuer)
        done = await agent.sign_in(BOB, "/", "mallory")
        assert done.status_code == 403
        assert "may not sign in" in done.json()["detail"]
        assert server.auth is not None
        text = server.auth.metrics.render().decode()
        assert 'dumont_auth_refusals_total{reason="not_allowed"} 1.0' in text


async def test_a_restart_keeps_the_session_and_the_revocations(
    auth_bed: AuthBed, agent: UserAgent, tmp_path: Path
) -> None:
    with running_provider(
        auth_bed.redirect_uris, auth_bed.post_logout_uris, ACCOUNTS, [signing_key()]
    ) as issuer:
        state = tmp_path / "state"
        first = await auth_bed.make(issuer, state_dir=state)
        await agent.sign_in(ALICE, "/", "alice")
        assert (await agent.navigate(auth_bed.origin(ALICE) + "/")).status_code == 200
        await first.stop()
        second = await auth_bed.make(issuer, state_dir=state)
        assert (await agent.navigate(auth_bed.origin(ALICE) + "/")).status_code == 200
        cookie = agent.client(auth_bed.origin(ALICE)).cookies["dumont_session"]
        await agent.get(auth_bed.origin(ALICE) + "/__dumont/auth/logout")
        await second.stop()
        await auth_bed.make(issuer, state_dir=state)
        replay = UserAgent(auth_bed.port)
        try:
            replay.client(auth_bed.origin(ALICE)).cookies.set("dumont_session", cookie)
            answer = await replay.get(auth_bed.origin(ALICE) + "/api")
            assert answer.status_code == 401  # revoked before the restart, still revoked
        finally:
            await replay.close()
