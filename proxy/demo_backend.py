"""A tiny stand-in for code-server for ``make demo``: a page naming its machine, /healthz, a socket.

``python -m proxy.demo_backend NAME PORT`` serves on 127.0.0.1:PORT until killed.
"""

from __future__ import annotations

import asyncio
import html
import sys
import time

from aiohttp import WSMsgType, web

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{name} — Dumont demo</title>
<link rel="stylesheet" href="/demo.css"></head>
<body class="{cls}"><main><h1>Served by the <b>{label}</b></h1>
<p>Started {started} s ago. Kill this machine and watch the proxy move you to the other one.</p>
</main></body></html>
"""
CSS = """
body { margin: 0; min-height: 100vh; display: grid; place-items: center; color: #eef;
       font: 18px system-ui, sans-serif; }
body.gpu { background: linear-gradient(135deg, #1d2b64, #5b3a8e); }
body.cpu { background: linear-gradient(135deg, #134e5e, #2b7a5b); }
main { padding: 2rem 3rem; border-radius: 20px; background: rgba(255, 255, 255, .12);
       backdrop-filter: blur(12px); border: 1px solid rgba(255, 255, 255, .25); }
"""


def make_app(name: str) -> web.Application:
    started = time.monotonic()
    label = "GPU machine" if name == "gpu" else "CPU backup"

    async def page(request: web.Request) -> web.Response:
        body = PAGE.format(
            name=html.escape(name),
            cls=html.escape(name),
            label=label,
            started=round(time.monotonic() - started),
        )
        return web.Response(text=body, content_type="text/html")

    async def css(request: web.Request) -> web.Response:
        return web.Response(text=CSS, content_type="text/css")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "lastHeartbeat": int(time.time() * 1000)})

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(f"{name}: {msg.data}")
        return ws

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/demo.css", css)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/socket", socket)
    return app


def main() -> None:
    name, port = sys.argv[1], int(sys.argv[2])
    asyncio.run(_serve(name, port))


async def _serve(name: str, port: int) -> None:
    runner = web.AppRunner(make_app(name), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    main()
