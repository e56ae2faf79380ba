"""Which layer refuses what: the attack table against a bare aiohttp server, without Dumont.

Cases marked "llhttp" must already be refused there (400); cases marked "dumont" must not be, or
Dumont's own check would be dead code and docs/SECURITY.md wrong. When an aiohttp upgrade moves a
case from one column to the other, this test says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestServer

from .rawnet import status_of
from .test_smuggling import CASES


async def _exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        try:
            return await asyncio.wait_for(reader.read(65536), 2)
        except TimeoutError:
            return b"<open>"
    finally:
        writer.close()


async def test_llhttp_refuses_its_column_and_passes_ours(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    async def anything(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", anything)
    server = await aiohttp_server(app)
    wrong: list[str] = []
    for name, data, expected, layer in CASES:
        status = status_of(await _exchange(server.port, data))
        refused_by_aiohttp = status == 400
        if layer == "llhttp" and not refused_by_aiohttp:
            wrong.append(f"{name}: aiohttp answered {status}, expected a 400 from llhttp")
        if layer == "dumont" and refused_by_aiohttp and expected == 400:
            wrong.append(f"{name}: aiohttp refuses it already; the table says dumont")
    assert wrong == []
