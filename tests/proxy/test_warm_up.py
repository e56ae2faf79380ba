"""Warm-up: code-server loads its VS Code server on the first GET /, which took 10 s of the first
reload after a failover in the continuity run. The proxy sends that request itself each time a
backend comes up, so no user waits for it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.config import HealthConfig
from tests.support.proxies import ProxyFactory, url_of
from tests.support.waiting import until

HEALTH = HealthConfig(interval=0.1, timeout=0.5, fall=2, rise=2)


class CodeServerLike:
    """GET / redirects to the login page (as code-server does, after its lazy start-up)."""

    def __init__(self) -> None:
        self.roots: list[str] = []
        self.healthy = True

    def app(self) -> web.Application:
        async def root(request: web.Request) -> web.Response:
            self.roots.append(request.path_qs)
            raise web.HTTPFound("./login")

        async def healthz(request: web.Request) -> web.Response:
            if not self.healthy:
                return web.Response(status=503)
            return web.json_response({"status": "alive"})

        app = web.Application()
        app.router.add_get("/", root)
        app.router.add_get("/healthz", healthz)
        return app


async def test_each_backend_is_warmed_up_whenever_it_comes_up(
    aiohttp_server: Callable[..., Awaitable[TestServer]], make_proxy: ProxyFactory
) -> None:
    gpu, cpu = CodeServerLike(), CodeServerLike()
    gpu_server, cpu_server = await aiohttp_server(gpu.app()), await aiohttp_server(cpu.app())
    server = await make_proxy(url_of(gpu_server), url_of(cpu_server), health=HEALTH)
    await until(
        lambda: gpu.roots == ["/"] and cpu.roots == ["/"], "both warmed up once", 10, interval=0.05
    )

    health = server.workspace.machine.health
    cpu.healthy = False
    await until(lambda: not health["standby"].up, "the standby seen down", 10, interval=0.05)
    cpu.healthy = True  # a restarted code-server: lazy again
    await until(lambda: cpu.roots == ["/", "/"], "the standby warmed up again", 10, interval=0.05)
    assert gpu.roots == ["/"]  # checks that change nothing send nothing


async def test_warm_up_can_be_turned_off(
    aiohttp_server: Callable[..., Awaitable[TestServer]], make_proxy: ProxyFactory
) -> None:
    gpu, cpu = CodeServerLike(), CodeServerLike()
    gpu_server, cpu_server = await aiohttp_server(gpu.app()), await aiohttp_server(cpu.app())
    off = dataclasses.replace(HEALTH, warmup_path=None)
    server = await make_proxy(url_of(gpu_server), url_of(cpu_server), health=off)
    health = server.workspace.machine.health
    await until(lambda: health["primary"].up and health["standby"].up, "both up", 10, interval=0.05)
    await asyncio.sleep(0.5)  # several check rounds
    assert gpu.roots == cpu.roots == []
