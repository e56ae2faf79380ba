"""The OpenID providers the sign-in tests use, and a user agent that signs in through the proxy.

- ``running_provider``: the real oidc-provider (npm) as a process in its own group, with its
  development login and consent screens, signing with a key the test made.
- ``FakeIssuer``: an aiohttp app that speaks the same wire format (discovery, JWKS, authorize,
  token) but hands out whatever ID token the test built: only for the negative cases (forged,
  expired, wrong audience, ``alg: none``, HS256 keyed with the public key), so that the proxy's
  real library is what refuses them.
- ``UserAgent``: a browser's cookies and navigations over httpx, one cookie jar per origin; it
  fills oidc-provider's dev forms as a person would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
from aiohttp import web
from joserfc.jwk import RSAKey

from tests.support.ports import free_port
from tests.support.processes import REPO, Proc

__all__ = [
    "NAVIGATE",
    "FakeIssuer",
    "UserAgent",
    "provider_entry",
    "query_of",
    "running_provider",
    "signing_key",
]

HERE = Path(__file__).resolve().parent
NAVIGATE = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
CLIENT_ID = "dumont"
CLIENT_SECRET = "a-long-enough-client-secret-for-the-tests"


def provider_entry() -> Path:
    """oidc-provider's entry point, installed by scripts/install-oidc-provider.sh (which `make
    test` runs); installed here on first use when missing, as the Makefile would."""
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "install-oidc-provider.sh")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return Path(out.stdout.strip().splitlines()[-1]) / "lib" / "index.js"


def signing_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": f"k{time.monotonic_ns()}", "use": "sig"})


@contextmanager
def running_provider(
    redirect_uris: list[str],
    post_logout_uris: list[str],
    accounts: dict[str, dict[str, Any]],
    keys: list[RSAKey],
) -> Iterator[str]:
    """The real provider on a free port; yields its issuer URL. Killed by process group."""
    entry = provider_entry()
    node = entry.parents[4] / "node"  # install-oidc-provider.sh links Node 24 there
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    config = {
        "issuer": issuer,
        "port": port,
        "clients": [
            {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": redirect_uris,
                "post_logout_redirect_uris": post_logout_uris,
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
            }
        ],
        "jwks": {"keys": [k.as_dict(private=True) for k in keys]},
        "accounts": accounts,
    }
    env = {**os.environ, "OIDC_PROVIDER_ENTRY": str(entry), "OIDC_TEST_CONFIG": json.dumps(config)}
    popen = subprocess.Popen(
        [str(node), str(HERE / "provider.mjs")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, env=env, cwd=HERE,
    )  # fmt: skip
    proc = Proc(popen, port)
    try:
        assert popen.stdout is not None
        deadline = time.monotonic() + 30
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = popen.stdout.readline()
            if not line:
                raise RuntimeError(f"oidc-provider exited: {''.join(seen)}")
            seen.append(line)
            if line.startswith("PORT "):
                break
        else:
            raise RuntimeError("oidc-provider did not start in 30 s")
        yield issuer
    finally:
        proc.stop()


@dataclass
class FakeIssuer:
    """Discovery, JWKS, authorize and token endpoints whose ID token ``make_token`` builds from
    the nonce the proxy sent (the test decides what is wrong with it)."""

    make_token: Callable[[str, str], str]  # (issuer, nonce) -> compact token
    public_keys: list[dict[str, Any]]
    issuer: str = ""
    nonces: dict[str, str] = field(default_factory=dict)  # code -> nonce

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        return app

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
            }
        )

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": self.public_keys})

    async def authorize(self, request: web.Request) -> web.Response:
        query = request.query
        code = f"code{len(self.nonces)}"
        self.nonces[code] = query["nonce"]
        assert query["code_challenge_method"] == "S256"
        location = f"{query['redirect_uri']}?code={code}&state={query['state']}"
        return web.Response(status=302, headers={"Location": location})

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        assert form["code_verifier"]
        nonce = self.nonces[str(form["code"])]
        return web.json_response(
            {"id_token": self.make_token(self.issuer, nonce), "token_type": "Bearer"}
        )


class UserAgent:
    """One browser: a cookie jar per origin, navigations with Fetch Metadata, no auto-redirect.
    The proxy is reached on 127.0.0.1 with the workspace's Host (no resolver needed)."""

    def __init__(self, proxy_port: int) -> None:
        self.proxy_port = proxy_port
        self.clients: dict[str, httpx.AsyncClient] = {}

    def client(self, origin: str) -> httpx.AsyncClient:
        if origin not in self.clients:
            parts = urlsplit(origin)
            host = parts.hostname or ""
            if host == "127.0.0.1":
                self.clients[origin] = httpx.AsyncClient(base_url=origin, timeout=10)
            else:  # a workspace's name: the proxy, with that Host
                self.clients[origin] = httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{self.proxy_port}",
                    headers={"Host": parts.netloc},
                    timeout=10,
                )
        return self.clients[origin]

    def origin(self, host: str) -> str:
        return f"http://{host}:{self.proxy_port}"

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        parts = urlsplit(url)
        client = self.client(f"{parts.scheme}://{parts.netloc}")
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return await client.get(path, **kwargs)

    async def navigate(self, url: str) -> httpx.Response:
        return await self.get(url, headers=NAVIGATE)

    async def through_provider(self, location: str, login: str) -> str:
        """Follows the issuer's redirects and fills its dev login and consent forms (and its
        logout confirmation); returns the URL it finally sends the browser back to."""
        for _ in range(12):
            if not location.startswith("http://127.0.0.1"):
                return location
            response = await self.navigate(location)
            if response.is_redirect:
                location = urljoin(location, response.headers["location"])
                continue
            action = re.search(r'action="([^"]+)"', response.text)
            assert action is not None, response.text[:500]
            form = dict(
                re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', response.text)
            )
            if 'name="login"' in response.text:
                form.update(login=login, password="any")
            elif 'name="logout"' in response.text:  # the end-session confirmation
                form["logout"] = "yes"
            target = urljoin(location, action.group(1))
            parts = urlsplit(target)
            posted = await self.client(f"{parts.scheme}://{parts.netloc}").post(
                parts.path, data=form
            )
            assert posted.is_redirect, posted.text[:500]
            location = urljoin(target, posted.headers["location"])
        raise AssertionError("the provider never sent the browser back")

    async def sign_in(self, host: str, path: str, login: str) -> httpx.Response:
        """A navigation to ``path`` on ``host`` without a session, all the way through the
        provider; returns the callback's answer (a 302 to ``path`` when all went well)."""
        first = await self.navigate(self.origin(host) + path)
        assert first.status_code == 302, (first.status_code, first.text)
        back = await self.through_provider(first.headers["location"], login)
        return await self.navigate(back)

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
