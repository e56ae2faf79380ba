"""WebSocket round trips through the proxy against a bare byte tunnel after the 101 (issue 2).

One aiohttp WebSocket echo on uvloop; in front of it, in the same run: nothing ("direct"), our
proxy (it splices bytes after the backend's 101, proxy/dataplane/websocket.py), and a raw tunnel
(the upgrade request is forwarded, then bytes are copied both ways untouched). The gap between the
last two is what the proxy's own handshake and splice cost. One client connection sends N messages
one at a time and awaits each echo. Prints one table.

    .venv/bin/python bench/ws_relay.py [--messages 5000] [--size 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import uvloop
from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/support, shared with the tests

from tests.support.ports import free_port  # noqa: E402
from tests.support.processes import kill_group  # noqa: E402


async def echo_server(port: int) -> web.AppRunner:
    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse(max_msg_size=0)
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str(msg.data)
        return sock

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ws", ws)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


class RawTunnel(asyncio.Protocol):
    """Copies bytes between a client and one upstream connection, with backpressure both ways."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.peer: asyncio.Transport | None = None
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_task(self._connect(), name="raw-tunnel-connect")

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.transport is not None
        peer, _ = await loop.create_connection(lambda: _Back(self), *self.upstream)
        self.peer = peer
        for data in self.pending:
            peer.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.pending.append(data)
        else:
            self.peer.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()


class _Back(asyncio.Protocol):
    def __init__(self, front: RawTunnel) -> None:
        self.front = front

    def data_received(self, data: bytes) -> None:
        assert self.front.transport is not None
        self.front.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.front.transport is not None:
            self.front.transport.close()


async def round_trips(url: str, messages: int, size: int) -> list[float]:
    payload = "x" * size
    rtts: list[float] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for i in range(messages + 250):
            started = time.perf_counter()
            await ws.send_str(payload)
            await ws.receive_str()
            if i >= 250:  # warm-up first
                rtts.append((time.perf_counter() - started) * 1e6)
    return rtts


@contextlib.contextmanager
def our_proxy(upstream_port: int) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "proxy",
            "--primary", f"http://127.0.0.1:{upstream_port}",
            "--standby", f"http://127.0.0.1:{free_port()}",
            "--listen", f"127.0.0.1:{port}",
            "--control-listen", f"127.0.0.1:{free_port()}",
            "--log-level", "error",
        ],
        cwd=REPO,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        time.sleep(1.5)  # first health checks decide the route
        yield port
    finally:
        kill_group(proc)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


async def main(args: argparse.Namespace) -> None:
    echo_port = free_port()
    echo = await echo_server(echo_port)
    loop = asyncio.get_running_loop()
    tunnel_port = free_port()
    tunnel = await loop.create_server(
        lambda: RawTunnel(("127.0.0.1", echo_port)), "127.0.0.1", tunnel_port
    )
    results: dict[str, list[tuple[float, float]]] = {"direct": [], "raw tunnel": [], "dumont": []}
    try:
        with our_proxy(echo_port) as proxy_port:
            ports = {"direct": echo_port, "raw tunnel": tunnel_port, "dumont": proxy_port}
            for _ in range(args.runs):
                for name, port in ports.items():
                    rtts = await round_trips(
                        f"http://127.0.0.1:{port}/ws", args.messages, args.size
                    )
                    results[name].append((percentile(rtts, 50), percentile(rtts, 99)))
    finally:
        tunnel.close()
        await echo.cleanup()
    direct = statistics.median(p50 for p50, _ in results["direct"])
    print(
        f"\n{args.messages} messages of {args.size} B, median of {args.runs} run(s); "
        f"load {os.getloadavg()[0]:.2f}\n"
    )
    print("| path       | WS p50 us | WS p99 us | +p50 over direct us |")
    print("|------------|----------:|----------:|--------------------:|")
    for name, runs in results.items():
        p50 = statistics.median(r[0] for r in runs)
        p99 = statistics.median(r[1] for r in runs)
        print(f"| {name:<10} | {p50:9.0f} | {p99:9.0f} | {p50 - direct:19.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    uvloop.run(main(parser.parse_args()))
