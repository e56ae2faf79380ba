"""The small upstream servers the benchmarks run as their own processes.

``python -m peers.servers ws-echo --port P``: a WebSocket echo on any path, ``/healthz`` 200.
``python -m peers.servers backend --name gpu --port P``: ``/`` answers the name, ``/healthz`` 200.
``python -m peers.servers plain-proxy --upstream URL --port P``: the simplest streaming aiohttp
reverse proxy (HTTP and WebSocket, one pooled ClientSession, no health checks, no header rules), a
yardstick for what aiohttp itself costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import ClientSession, ClientWebSocketResponse, TCPConnector, WSMsgType, hdrs, web

__all__ = ["backend_app", "main", "plain_proxy_app", "ws_echo_app"]

# Hop-by-hop headers (RFC 9110, 7.6.1) and the ones aiohttp sets itself.
_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade", "content-length", "host"}  # fmt: skip
_SESSION = web.AppKey("session", ClientSession)


async def _healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _echo(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return web.Response(text="ws echo")
    ws = web.WebSocketResponse(compress=False, max_msg_size=0)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def ws_echo_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/{tail:.*}", _echo)
    return app


def backend_app(name: str) -> web.Application:
    async def answer(_request: web.Request) -> web.Response:
        return web.Response(text=name)

    app = web.Application()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/", answer)
    return app


async def _pipe(
    source: web.WebSocketResponse | ClientWebSocketResponse,
    sink: web.WebSocketResponse | ClientWebSocketResponse,
) -> None:
    async for msg in source:
        if msg.type is WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
    await sink.close()


def plain_proxy_app(upstream: str) -> web.Application:
    async def forward(request: web.Request) -> web.StreamResponse:
        session = request.app[_SESSION]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        url = upstream + request.path_qs
        if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
            async with session.ws_connect(url, headers=headers, compress=0) as up:
                down = web.WebSocketResponse(compress=False)
                await down.prepare(request)
                async with asyncio.TaskGroup() as relays:
                    relays.create_task(_pipe(down, up))
                    relays.create_task(_pipe(up, down))
                return down
        body = request.content if request.body_exists else None
        async with session.request(
            request.method, url, headers=headers, data=body, allow_redirects=False
        ) as resp:
            out = web.StreamResponse(status=resp.status)
            out.headers.update({k: v for k, v in resp.headers.items() if k.lower() not in _HOP})
            if resp.content_length is not None:
                out.content_length = resp.content_length
            await out.prepare(request)
            async for chunk in resp.content.iter_chunked(1 << 16):
                await out.write(chunk)
            await out.write_eof()
            return out

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with ClientSession(
            connector=TCPConnector(limit=0), auto_decompress=False, skip_auto_headers=["User-Agent"]
        ) as session:
            app[_SESSION] = session
            yield

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    echo = sub.add_parser("ws-echo")
    echo.add_argument("--port", type=int, required=True)
    named = sub.add_parser("backend")
    named.add_argument("--port", type=int, required=True)
    named.add_argument("--name", required=True)
    plain = sub.add_parser("plain-proxy")
    plain.add_argument("--port", type=int, required=True)
    plain.add_argument("--upstream", required=True)
    args = parser.parse_args()
    if args.kind == "ws-echo":
        app = ws_echo_app()
    elif args.kind == "backend":
        app = backend_app(args.name)
    else:
        app = plain_proxy_app(args.upstream.rstrip("/"))
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
