"""WebSocket forwarding against a real upstream WebSocket echo."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer
from yarl import URL

from tests.support.proxies import ProxyFactory, Upstreams, public_url, url_of


async def test_echo_subprotocol_and_binary(upstreams: Upstreams, make_proxy: ProxyFactory) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu))
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(
            public_url(proxy) / "stable-abc" / "ws", protocols=("nope", "v1.dumont")
        ) as ws,
    ):
        assert ws.protocol == "v1.dumont"
        await ws.send_str("whoami")
        assert (await ws.receive_str()) == "gpu"
        await ws.send_bytes(b"\x00\x01binary")
        assert (await ws.receive_bytes()) == b"\x00\x01binary"


async def test_large_message_passes(upstreams: Upstreams, make_proxy: ProxyFactory) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu))
    big = bytes(range(256)) * (48 * 1024 * 1024 // 256)  # 48 MiB: above aiohttp's 4 MiB default
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(public_url(proxy) / "ws", max_msg_size=0) as ws,
    ):
        await ws.send_bytes(big)
        assert (await ws.receive_bytes(timeout=60)) == big


async def test_close_code_from_backend_reaches_client(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu))
    async with aiohttp.ClientSession() as s, s.ws_connect(public_url(proxy) / "ws") as ws:
        await ws.send_str("close:4001")
        msg = await ws.receive()
        assert msg.type == WSMsgType.CLOSE
        assert msg.data == 4001
        assert msg.extra == "asked to"


async def test_ping_is_relayed_to_backend(upstreams: Upstreams, make_proxy: ProxyFactory) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu))
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(public_url(proxy) / "ws", autoping=False) as ws,
    ):
        await ws.ping(b"hello")
        got = {await _next_kind(ws), await _next_kind(ws)}
        assert got == {"pong:hello", "text:saw ping hello"}


async def _next_kind(ws: aiohttp.ClientWebSocketResponse) -> str:
    msg = await ws.receive(timeout=5)
    if msg.type == WSMsgType.PONG:
        return f"pong:{msg.data.decode()}"
    return f"text:{msg.data}"


async def _alive(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def test_client_close_code_reaches_backend(
    aiohttp_server: object, make_proxy: ProxyFactory, upstreams: Upstreams
) -> None:
    seen: list[int | None] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        seen.append(ws.close_code)
        return ws

    app = web.Application()
    app.router.add_get("/healthz", _alive)
    app.router.add_get("/ws", handler)
    backend: TestServer = await aiohttp_server(app)  # type: ignore[operator]
    proxy = await make_proxy(url_of(backend), url_of(upstreams[1]))
    async with aiohttp.ClientSession() as s, s.ws_connect(public_url(proxy) / "ws") as ws:
        await ws.close(code=4321)
    for _ in range(100):
        if seen:
            break
        await proxy.workspace.changed(0.05)
    assert seen == [4321]


async def test_upstream_refusal_is_answered_before_any_101(
    aiohttp_server: object, make_proxy: ProxyFactory, upstreams: Upstreams
) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=403, text="origin mismatch")

    app = web.Application()
    app.router.add_get("/healthz", _alive)
    app.router.add_get("/ws", refuse)
    backend: TestServer = await aiohttp_server(app)  # type: ignore[operator]
    proxy = await make_proxy(url_of(backend), url_of(upstreams[1]))
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await s.ws_connect(public_url(proxy) / "ws")
    assert caught.value.status == 403


async def test_switch_closes_websockets_with_1012(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu))
    async with aiohttp.ClientSession() as s, s.ws_connect(public_url(proxy) / "ws") as ws:
        await ws.send_str("whoami")
        assert await ws.receive_str() == "gpu"
        proxy.workspace.failover()
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.CLOSE
        assert msg.data == 1012
    async with aiohttp.ClientSession() as s, s.ws_connect(public_url(proxy) / "ws") as ws:
        await ws.send_str("whoami")
        assert await ws.receive_str() == "cpu"


async def test_backend_silent_on_upgrade_is_a_504(
    make_proxy: ProxyFactory, upstreams: Upstreams
) -> None:
    import asyncio

    done = asyncio.Event()
    accepted: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        accepted.append(writer)
        await reader.read(65536)
        await done.wait()

    silent = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        proxy = await make_proxy(url_of(upstreams[0]), url_of(upstreams[1]), switch_wait=0.5)
        # The standby is the silent one: route there by failing over.
        await proxy.workspace.replace_backend("standby", URL(f"http://127.0.0.1:{port}"))
        proxy.workspace.machine.health["standby"].up = True  # no /healthz to answer
        proxy.workspace.failover()
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await s.ws_connect(public_url(proxy) / "ws")
        assert caught.value.status == 504
    finally:
        done.set()
        for writer in accepted:
            writer.close()
            await writer.wait_closed()
        silent.close()
        await silent.wait_closed()
