"""A proxy with sign-in in front of two workspaces (alice's and bob's, each a pair of test
upstreams), against an issuer the test chooses: the real oidc-provider or a FakeIssuer."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from proxy.auth import AuthConfig
from proxy.config import Config, HealthConfig, HostPort, workspace_setting
from proxy.server import ProxyServer
from proxy.workspaces.spec import parse_workspace
from tests.auth.idp import CLIENT_ID, CLIENT_SECRET, UserAgent
from tests.support.h2client import certificate
from tests.support.ports import free_port
from tests.support.proxies import upstreams
from tests.support.upstream_app import make_upstream_app

__all__ = ["AuthBed", "auth_bed", "certificate", "upstreams"]

ALICE = "alice.ide.test"
BOB = "bob.ide.test"


@dataclasses.dataclass
class AuthBed:
    port: int
    tmp: Path
    make: Callable[..., Awaitable[ProxyServer]]

    def origin(self, host: str) -> str:
        return f"http://{host}:{self.port}"

    @property
    def redirect_uris(self) -> list[str]:
        return [f"{self.origin(h)}/__dumont/auth/callback" for h in (ALICE, BOB)]

    @property
    def post_logout_uris(self) -> list[str]:
        return [f"{self.origin(h)}/__dumont/auth/signed-out" for h in (ALICE, BOB)]


def keys_file(directory: Path, *keys: str) -> Path:
    path = directory / "cookie-keys"
    path.write_text("".join(f"{k}\n" for k in keys or (secrets.token_hex(32),)))
    return path


@pytest.fixture
async def auth_bed(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[AuthBed]:
    """``bed.make(issuer, **auth)`` starts the proxy on ``bed.port``; stopped after the test."""
    port = free_port()
    started: list[ProxyServer] = []
    backends = [await aiohttp_server(make_upstream_app(n)) for n in ("a1", "a2", "b1", "b2")]
    urls = [f"http://127.0.0.1:{s.port}" for s in backends]
    keys = keys_file(tmp_path)

    async def make(
        issuer: str, *, state_dir: Path | None = None, proxy: Any = None, **auth: Any
    ) -> ProxyServer:
        """``proxy``: other settings of the proxy (a dict), ``auth``: of [auth]."""
        workspaces = (
            parse_workspace(
                "alice",
                {"hosts": [ALICE], "primary": urls[0], "standby": urls[1],
                 "owners": ["alice@example.com", "group:admins"]},
                workspace_setting,
            ),
            parse_workspace(
                "bob", {"hosts": [BOB], "primary": urls[2], "standby": urls[3]}, workspace_setting
            ),
        )  # fmt: skip
        settings: dict[str, Any] = {
            "mode": "oidc",
            "issuer": issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "allowed_domains": ("example.com",),
            "scopes": ("openid", "email", "groups"),
            "cookie_keys_file": str(keys),
            **auth,
        }
        config = Config(
            workspaces=workspaces,
            listen=HostPort("127.0.0.1", port),
            control_listen=HostPort("127.0.0.1", 0),
            health=HealthConfig(interval=0.2, timeout=0.2, fall=2, rise=2, warmup_path=None),
            shutdown_timeout=1.0,
            state_dir=state_dir,
            auth=AuthConfig(**settings),
            **(proxy or {}),
        )
        server = ProxyServer(config)
        await server.start()
        started.append(server)
        return server

    yield AuthBed(port, tmp_path, make)
    for server in started:
        await server.stop()


@pytest.fixture
async def agent(auth_bed: AuthBed) -> AsyncIterator[UserAgent]:
    ua = UserAgent(auth_bed.port)
    yield ua
    await ua.close()
