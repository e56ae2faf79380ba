"""A test backend: echoes what it received, streams big bodies, echoes WebSockets.

Run in-process through ``make_upstream_app(name)`` or as a process:
``python tests/support/upstream_app.py NAME [HOST [PORT]]`` prints ``PORT <n>`` once it listens on
HOST (127.0.0.1) and PORT (one the kernel picks; a given one lets a restarted backend come back
where the proxies look for it).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import sys

from aiohttp import WSMsgType, web

CHUNK = b"x" * (1 << 20)


def make_upstream_app(name: str) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        return web.json_response(
            {
                "backend": name,
                "method": request.method,
                "path_qs": request.raw_path,
                "headers": list(request.headers.items()),
                "body_size": size,
                "body_sha256": digest.hexdigest(),
            }
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "lastHeartbeat": 0})

    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["size"])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        left = 0 if request.method == "HEAD" else size
        while left > 0:
            piece = CHUNK[: min(left, len(CHUNK))]
            await response.write(piece)
            left -= len(piece)
        return response

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.Response(text=f"slow from {name}")

    async def page(request: web.Request) -> web.Response:
        document = f"<!doctype html><html><head><title>{name}</title></head><body>{name}</body>"
        body = document.encode()
        headers = {"Content-Type": "text/html; charset=utf-8"}
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def raw_headers(request: web.Request) -> web.Response:
        return web.Response(
            text="hop",
            headers={"Connection": "X-Secret, keep-alive", "X-Secret": "1", "Keep-Alive": "5"},
        )

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("v1.dumont", "other"), autoping=False, max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                if msg.data.startswith("close:"):
                    await ws.close(code=int(msg.data[6:]), message=b"asked to")
                    break
                if msg.data == "whoami":
                    await ws.send_str(name)
                    continue
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type == WSMsgType.PING:
                await ws.pong(msg.data)
                await ws.send_str(f"saw ping {msg.data.decode()}")
        return ws

    app = web.Application(client_max_size=0)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/download/{size}", download)
    app.router.add_get("/slow", slow)
    app.router.add_get("/hop", raw_headers)
    app.router.add_get("/page", page)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/stable-abc/ws", websocket)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def _main(name: str, host: str = "127.0.0.1", port: int = 0) -> None:
    runner = web.AppRunner(make_upstream_app(name), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    port = runner.addresses[0][1]
    print(f"PORT {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    name, host, port = [*sys.argv[1:], "127.0.0.1", "0"][:3]
    if len(sys.argv) == 3:  # NAME HOST: the pad above put the default host where PORT goes
        port = "0"
    asyncio.run(_main(name, host, int(port)))
