"""What sign-in refuses, through the real proxy and its real JOSE library: ID tokens that are
forged, expired, for another audience, unsigned (``alg: none``) or "signed" with HS256 keyed by the
issuer's public key; a replayed or mismatched ``state``; a return URL pointing elsewhere; a tampered
cookie; a WebSocket upgrade without a session; too many attempts from one address.

The issuer here is a FakeIssuer (tests/auth/idp.py) so that the test decides the token; the flow
against a real provider is in test_signin_flow.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import RSAKey

from proxy.auth.oidc import Issuer
from proxy.server import ProxyServer
from tests.auth.conftest import ALICE, BOB, AuthBed
from tests.auth.idp import (
    CLIENT_ID,
    CLIENT_SECRET,
    FakeIssuer,
    UserAgent,
    query_of,
    signing_key,
)
from tests.support.h2client import H2Client, tls_settings
from tests.support.ports import free_port
from tests.support.proxies import control_url

pytestmark = pytest.mark.timeout(30)

TokenMaker = Callable[[str, str], str]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def claims(issuer: str, nonce: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": issuer, "sub": "alice", "aud": CLIENT_ID, "iat": now, "exp": now + 300,
        "nonce": nonce, "email": "alice@example.com", "email_verified": True,
    }  # fmt: skip
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(key: RSAKey, **changes: Any) -> TokenMaker:
    def make(issuer: str, nonce: str) -> str:
        header = {"alg": "RS256", "kid": key.kid}
        return jwt.encode(header, claims(issuer, nonce, **changes), key)

    return make


def unsigned(issuer: str, nonce: str) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims(issuer, nonce)).encode())}."


def hmac_with_public_key(key: RSAKey) -> TokenMaker:
    """The classic confusion: HS256 keyed with the PEM the JWKS publishes."""
    public_pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def make(issuer: str, nonce: str) -> str:
        header = _b64(json.dumps({"alg": "HS256", "kid": key.kid}).encode())
        body = _b64(json.dumps(claims(issuer, nonce)).encode())
        mac = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
        return f"{header}.{body}.{_b64(mac)}"

    return make


class Bed:
    def __init__(self, auth_bed: AuthBed, fake: FakeIssuer, server: ProxyServer) -> None:
        self.auth_bed = auth_bed
        self.fake = fake
        self.server = server
        self.alice = auth_bed.origin(ALICE)

    async def refusals(self, reason: str) -> float:
        """From the control listener's /metrics, as Prometheus scrapes it."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(control_url(self.server) / "metrics") as answer,
        ):
            text = await answer.text()
        for line in text.splitlines():
            if line.startswith(f'dumont_auth_refusals_total{{reason="{reason}"}}'):
                return float(line.split()[-1])
        raise AssertionError(f"no refusal series {reason}")


FakeStarter = Callable[..., Awaitable[Bed]]


@pytest.fixture
async def fake_bed(
    auth_bed: AuthBed, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> FakeStarter:
    key = signing_key()

    async def start(make_token: TokenMaker | None = None, **auth: Any) -> Bed:
        fake = FakeIssuer(make_token or signed(key), [key.as_dict(private=False)])
        server = await aiohttp_server(fake.app(), host="127.0.0.1")
        fake.issuer = f"http://127.0.0.1:{server.port}"
        proxy = await auth_bed.make(fake.issuer, **auth)
        return Bed(auth_bed, fake, proxy)

    return start


async def test_a_good_token_signs_in(fake_bed: FakeStarter, agent: UserAgent) -> None:
    bed = await fake_bed()
    done = await agent.sign_in(ALICE, "/x?y=1", "alice")
    assert done.status_code == 302
    assert done.headers["location"] == "/x?y=1"
    assert (await agent.get(f"{bed.alice}/echo")).status_code == 200


@pytest.mark.parametrize(
    "bad",
    ["forged", "expired", "wrong_audience", "wrong_issuer", "wrong_nonce", "alg_none", "hs256"],
)
async def test_bad_id_tokens_are_refused(fake_bed: FakeStarter, agent: UserAgent, bad: str) -> None:
    real = signing_key()
    other = RSAKey.generate_key(2048, parameters={"kid": str(real.kid)})  # same kid, other key
    makers: dict[str, TokenMaker] = {
        "forged": signed(other),
        "expired": signed(real, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
        "wrong_audience": signed(real, aud="someone-else"),
        "wrong_issuer": signed(real, iss="http://127.0.0.1:1"),
        "wrong_nonce": lambda issuer, nonce: signed(real)(issuer, "not-" + nonce),
        "alg_none": unsigned,
        "hs256": hmac_with_public_key(real),
    }
    bed = await fake_bed(makers[bad])
    bed.fake.public_keys = [real.as_dict(private=False)]
    done = await agent.sign_in(ALICE, "/", "alice")
    assert done.status_code == 403, done.text
    assert "dumont_session" not in done.headers.get("set-cookie", "")
    assert await bed.refusals("token") == 1
    # and the user is still not signed in
    assert (await agent.get(f"{bed.alice}/echo")).status_code == 401


async def test_state_replayed_or_mismatched_is_refused(
    fake_bed: FakeStarter, agent: UserAgent
) -> None:
    bed = await fake_bed()
    first = await agent.navigate(f"{bed.alice}/")
    back = await agent.through_provider(first.headers["location"], "alice")
    proxy = agent.client(bed.alice)
    state = query_of(back)["state"]
    name = f"dumont_login_{state[:12]}"
    login_cookie = proxy.cookies.get(name)
    assert login_cookie is not None
    mismatched = back.replace("state=", "state=x")
    assert (await agent.navigate(mismatched)).status_code == 403
    assert (await agent.navigate(back)).status_code == 302  # the real one, once
    # An attacker replaying the callback with the captured login cookie:
    thief, stranger = UserAgent(bed.auth_bed.port), UserAgent(bed.auth_bed.port)
    try:
        thief.client(bed.alice).cookies.set(name, login_cookie, path="/__dumont/auth/")
        assert (await thief.navigate(back)).status_code == 403
        # and a callback with no sign-in under way at all
        assert (await stranger.navigate(back)).status_code == 403
    finally:
        await thief.close()
        await stranger.close()
    assert await bed.refusals("state") == 3


async def test_two_tabs_sign_in_side_by_side(fake_bed: FakeStarter, agent: UserAgent) -> None:
    """Both tabs found the session gone and went to the issuer; each comes back to its page."""
    bed = await fake_bed()
    first = await agent.navigate(f"{bed.alice}/tab-one")
    second = await agent.navigate(f"{bed.alice}/tab-two")
    back_two = await agent.through_provider(second.headers["location"], "alice")
    back_one = await agent.through_provider(first.headers["location"], "alice")
    assert (await agent.navigate(back_two)).headers["location"] == "/tab-two"
    assert (await agent.navigate(back_one)).headers["location"] == "/tab-one"


@pytest.mark.parametrize(
    "wanted", ["https://evil.test/x", "//evil.test/x", "/\\evil.test", "javascript:alert(1)"]
)
async def test_a_return_url_elsewhere_lands_at_home(
    fake_bed: FakeStarter, agent: UserAgent, wanted: str
) -> None:
    bed = await fake_bed()
    start = await agent.get(
        f"{bed.alice}/__dumont/auth/login", params={"next": wanted}, headers={"Accept": "text/html"}
    )
    back = await agent.through_provider(start.headers["location"], "alice")
    done = await agent.navigate(back)
    assert done.status_code == 302
    assert done.headers["location"] == "/"


async def test_a_tampered_cookie_is_no_session(fake_bed: FakeStarter, agent: UserAgent) -> None:
    bed = await fake_bed()
    await agent.sign_in(ALICE, "/", "alice")
    jar = agent.client(bed.alice).cookies
    good = jar["dumont_session"]
    assert (await agent.get(f"{bed.alice}/echo")).status_code == 200
    flipped = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
    for value in (flipped, good + "x", "garbage", good.split(".")[1]):
        jar.clear()
        jar.set("dumont_session", value)
        assert (await agent.get(f"{bed.alice}/echo")).status_code == 401
        assert (await agent.navigate(f"{bed.alice}/")).status_code == 302  # to sign in


async def test_a_session_works_only_at_the_host_it_was_issued_at(
    fake_bed: FakeStarter, agent: UserAgent
) -> None:
    bed = await fake_bed()
    await agent.sign_in(ALICE, "/", "alice")
    cookie = agent.client(bed.alice).cookies["dumont_session"]
    bob = bed.auth_bed.origin(BOB)  # a workspace without owners: any signed-in user may open it
    agent.client(bob).cookies.set("dumont_session", cookie)
    assert (await agent.get(f"{bob}/echo")).status_code == 401
    assert (await agent.get(f"{bed.alice}/echo")).status_code == 200


async def test_a_browser_cannot_send_the_gates_header(
    fake_bed: FakeStarter, agent: UserAgent
) -> None:
    """X-Dumont-* is the proxy's own: dropped from what a browser sends, so nobody can ask the
    pages app for someone else's refusal page or a sign-in without the gate."""
    bed = await fake_bed()
    await agent.sign_in(ALICE, "/", "alice")
    echoed = await agent.get(f"{bed.alice}/echo", headers={"X-Dumont-Auth": "403-page"})
    assert echoed.status_code == 200
    assert not any(n.lower() == "x-dumont-auth" for n, _ in echoed.json()["headers"])


async def test_an_expired_session_is_no_session(fake_bed: FakeStarter, agent: UserAgent) -> None:
    bed = await fake_bed(session_lifetime=1.0)
    await agent.sign_in(ALICE, "/", "alice")
    assert (await agent.get(f"{bed.alice}/echo")).status_code == 200
    await asyncio.sleep(1.2)
    assert (await agent.get(f"{bed.alice}/echo")).status_code == 401


async def test_cookies_are_secure_under_tls(fake_bed: FakeStarter, agent: UserAgent) -> None:
    """Behind a trusted TLS-terminating front proxy (X-Forwarded-Proto: https) the cookies are
    Secure and the callback is an https URL; over plain HTTP they cannot be."""
    bed = await fake_bed(proxy={"trusted_proxies": (ipaddress.ip_network("127.0.0.1/32"),)})
    login = f"{bed.alice}/__dumont/auth/login"
    over_tls = await agent.get(login, headers={"X-Forwarded-Proto": "https"})
    assert over_tls.status_code == 302
    assert "; Secure" in over_tls.headers["set-cookie"]
    assert "HttpOnly" in over_tls.headers["set-cookie"]
    sent_to = query_of(over_tls.headers["location"])["redirect_uri"]
    assert sent_to == f"https://{ALICE}:{bed.auth_bed.port}/__dumont/auth/callback"
    plain = await agent.get(login)
    assert "Secure" not in plain.headers["set-cookie"]
    assert query_of(plain.headers["location"])["redirect_uri"].startswith("http://")


async def test_the_proxys_own_paths(fake_bed: FakeStarter, agent: UserAgent) -> None:
    """Static files and the health check stay open (the 403 page needs its CSS); the workspace's
    events and status are gated like the IDE."""
    bed = await fake_bed()
    assert (await agent.get(f"{bed.alice}/__dumont/healthz")).status_code == 200
    assert (await agent.get(f"{bed.alice}/__dumont/static/transition.css")).status_code == 200
    assert (await agent.get(f"{bed.alice}/__dumont/status")).status_code == 401
    events = await agent.get(
        f"{bed.alice}/__dumont/events", headers={"Accept": "text/event-stream"}
    )
    assert events.status_code == 401
    await agent.sign_in(ALICE, "/", "alice")
    assert (await agent.get(f"{bed.alice}/__dumont/status")).status_code == 200


async def test_the_provider_saying_no(fake_bed: FakeStarter, agent: UserAgent) -> None:
    bed = await fake_bed()
    start = await agent.navigate(f"{bed.alice}/")
    state = query_of(start.headers["location"])["state"]
    answer = await agent.navigate(
        f"{bed.alice}/__dumont/auth/callback?error=access_denied&state={state}"
    )
    assert answer.status_code == 403
    assert await bed.refusals("provider_error") == 1


async def test_an_unreachable_issuer_is_a_502_not_a_crash(
    auth_bed: AuthBed, agent: UserAgent
) -> None:
    await auth_bed.make(f"http://127.0.0.1:{free_port()}")
    answer = await agent.navigate(auth_bed.origin(ALICE) + "/")
    assert answer.status_code == 502
    assert answer.json()["error"] == "the sign-in provider did not answer"
    assert (await agent.get(auth_bed.origin(ALICE) + "/echo")).status_code == 401


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.find(b"\r\n\r\n") + 30:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


async def test_a_websocket_upgrade_without_session_gets_401(fake_bed: FakeStarter) -> None:
    bed = await fake_bed()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {ALICE}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-Fetch-Mode: websocket\r\nOrigin: http://alice.ide.test\r\n\r\n"
    ).encode()
    reply = await asyncio.to_thread(_raw, bed.auth_bed.port, request)
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    assert b"sign in first" in reply
    assert b"backend" not in reply  # the echo backend never answered


async def test_the_gate_holds_over_http2(
    fake_bed: FakeStarter, certificate: tuple[Path, Path]
) -> None:
    """Over HTTP/2 (issue 19) the gate sees every stream first, WebSockets (RFC 8441) included."""
    bed = await fake_bed(proxy={"tls": tls_settings(certificate)})
    client = await H2Client.open(bed.auth_bed.port)
    try:
        page = await client.request(
            [*H2Client.request_fields("/some/file", host=ALICE),
             (b"sec-fetch-mode", b"navigate"), (b"accept", b"text/html")]
        )  # fmt: skip
        opening = client.start(
            [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"),
             (b":authority", ALICE.encode()), (b":path", b"/ws"),
             (b"sec-websocket-version", b"13"), (b"origin", f"https://{ALICE}".encode())],
            end=False,
        )  # fmt: skip
        await client.flush()
        await client.wait_for(lambda: client.done(opening), 10)
        websocket = client.replies[opening]
    finally:
        await client.close()
    assert page.status == 302
    # To the issuer, with a callback on https: the proxy knows the stream came over TLS.
    location = (page.header(b"location") or b"").decode()
    assert "/authorize?" in location
    assert "redirect_uri=https%3A%2F%2Falice.ide.test" in location
    assert websocket.status == 401
    assert b"backend" not in websocket.body  # the echo backend never answered


async def test_sign_in_attempts_are_rate_limited(fake_bed: FakeStarter, agent: UserAgent) -> None:
    bed = await fake_bed(attempts_per_minute=1.0, attempts_burst=2)
    statuses = [(await agent.navigate(f"{bed.alice}/p{i}")).status_code for i in range(4)]
    assert statuses == [302, 302, 429, 429]
    assert await bed.refusals("rate_limited") == 2


async def test_key_rotation_refetches_the_jwks(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    old, new = signing_key(), signing_key()
    fake = FakeIssuer(signed(old), [old.as_dict(private=False)])
    server = await aiohttp_server(fake.app(), host="127.0.0.1")
    fake.issuer = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient() as client:
        issuer = Issuer(fake.issuer, CLIENT_ID, CLIENT_SECRET, client, jwks_refetch=0.0)
        assert (await issuer.validate(signed(old)(fake.issuer, "n1"), "n1"))["sub"] == "alice"
        fake.public_keys = [new.as_dict(private=False), old.as_dict(private=False)]
        assert (await issuer.validate(signed(new)(fake.issuer, "n2"), "n2"))["sub"] == "alice"
        assert issuer.keys is not None
        assert {k.kid for k in issuer.keys.keys} == {old.kid, new.kid}
