"""The small upstream servers the benchmarks run as their own processes.

``python -m peers.servers ws-echo --port P``: a WebSocket echo on any path, ``/healthz`` 200.
``python -m peers.servers backend --name gpu --port P``: ``/`` answers the name, ``/healthz`` 200.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from aiohttp import WSMsgType, web

__all__ = ["backend_app", "main", "ws_echo_app"]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    echo = sub.add_parser("ws-echo")
    echo.add_argument("--port", type=int, required=True)
    named = sub.add_parser("backend")
    named.add_argument("--port", type=int, required=True)
    named.add_argument("--name", required=True)
    args = parser.parse_args()
    app = ws_echo_app() if args.kind == "ws-echo" else backend_app(args.name)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
