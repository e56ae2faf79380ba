"""The proxy in-process and its backends, for every folder that tests the proxy: fixtures
(`upstreams`, `make_proxy`, `upstream_processes`) that a folder's conftest imports, and the URLs of
what they started.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from proxy.config import Config, HealthConfig, HostPort
from proxy.server import ProxyServer
from tests.support.processes import Proc, start_upstream
from tests.support.upstream_app import make_upstream_app

__all__ = [
    "ProxyFactory",
    "Upstreams",
    "base_config",
    "control_url",
    "make_proxy",
    "public_url",
    "start_healthz_only",
    "upstream_processes",
    "upstreams",
    "url_of",
]

Upstreams = tuple[TestServer, TestServer]


@pytest.fixture
async def upstreams(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Upstreams:
    gpu = await aiohttp_server(make_upstream_app("gpu"))
    cpu = await aiohttp_server(make_upstream_app("cpu"))
    return gpu, cpu


def base_config(primary: URL, standby: URL, **overrides: Any) -> Config:
    # No warm-up GET by default: tests that kill an upstream right after the proxy starts caught
    # aiohttp's test server closing while it accepted the warm-up's connection, and it left that
    # server-side transport open (an unraisable ResourceWarning, an error here). The warm-up has
    # tests of its own (test_warm_up.py) and runs in the continuity bed.
    health = overrides.pop(
        "health", HealthConfig(interval=0.2, timeout=0.2, fall=2, rise=2, warmup_path=None)
    )
    return dataclasses.replace(
        Config(
            primary=primary,
            standby=standby,
            listen=HostPort("127.0.0.1", 0),
            control_listen=HostPort("127.0.0.1", 0),
            health=health,
            shutdown_timeout=2.0,
        ),
        **overrides,
    )


ProxyFactory = Callable[..., Awaitable[ProxyServer]]


@pytest.fixture
async def make_proxy() -> AsyncIterator[ProxyFactory]:
    """Start in-process proxies on ephemeral ports; all are stopped after the test."""
    started: list[ProxyServer] = []

    async def factory(primary: URL, standby: URL, **overrides: Any) -> ProxyServer:
        server = ProxyServer(base_config(primary, standby, **overrides))
        await server.start()
        started.append(server)
        # The first checks decide who serves: wait for them instead of racing them.
        health = server.workspace.machine.health
        for _ in range(200):
            if all(h.last_check_at is not None for h in health.values()):
                break
            await server.workspace.changed(0.05)
        return server

    yield factory
    for server in started:
        await server.stop()


def public_url(server: ProxyServer) -> URL:
    assert server.public is not None
    a = server.public.address
    return URL(f"http://{a.host}:{a.port}")


def control_url(server: ProxyServer) -> URL:
    assert server.control is not None
    a = server.control.address
    return URL(f"http://{a.host}:{a.port}")


@pytest.fixture
def upstream_processes() -> Iterator[Callable[[str], Proc]]:
    """Backends as real processes, so a test can SIGKILL or SIGSTOP their process group."""
    procs: list[Proc] = []

    def start(name: str) -> Proc:
        proc = start_upstream(name)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


def url_of(server: TestServer | Proc) -> URL:
    port = server.port
    return URL(f"http://127.0.0.1:{port}")


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive", "lastHeartbeat": 0})


async def start_healthz_only(count: int) -> list[TestServer]:
    """`count` servers on 127.0.0.1 that answer code-server's /healthz and nothing else: stand-ins
    for code-servers where a test drives the proxy and only its health checks reach them. The
    caller closes them."""
    servers = []
    for _ in range(count):
        app = web.Application()
        app.router.add_get("/healthz", _healthz)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
    return servers
