"""A controller and two data-plane workers on one SO_REUSEPORT port (``--workers 2``), as processes.

What a user and an operator see must not change with the process count: every request counted
by the controller's /metrics, WebSockets closed with 1012 on a switch, a worker that dies replaced
without touching the other's connections, a clean exit on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator

import aiohttp
import pytest

from .processes import Proc, start_proxy

pytestmark = pytest.mark.slow


def _control(proxy: Proc, path: str, method: str = "GET") -> bytes:
    port = proxy.control_port  # type: ignore[attr-defined]
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        body: bytes = response.read()
        return body


def _requests_counted(proxy: Proc) -> float:
    text = _control(proxy, "/metrics").decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("dumont_http_requests_total{")
    )


def _workers_of(proxy: Proc) -> list[int]:
    children = f"/proc/{proxy.popen.pid}/task/{proxy.popen.pid}/children"
    with open(children) as f:
        return [int(pid) for pid in f.read().split()]


def _get(port: int, sock: socket.socket | None = None) -> bytes:
    """One GET on ``sock`` (kept alive) or on a new connection; the whole small answer."""
    own = sock is None
    conn = sock or socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        conn.sendall(b"GET /hello HTTP/1.1\r\nHost: ide.test\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        if own:
            conn.close()


@pytest.fixture
def proxy(upstream_processes: Callable[[str], Proc]) -> Iterator[Proc]:
    gpu, cpu = upstream_processes("gpu"), upstream_processes("cpu")
    started = start_proxy(
        f"http://127.0.0.1:{gpu.port}",
        f"http://127.0.0.1:{cpu.port}",
        *("--workers", "2", "--health-interval", "0.5", "--failback", "manual"),
    )
    try:
        yield started
    finally:
        started.stop()  # the whole process group: the controller and its workers


def test_every_request_is_counted_by_the_controller(proxy: Proc) -> None:
    try:
        assert len(_workers_of(proxy)) == 2
        before = _requests_counted(proxy)
        for _ in range(40):  # new connections: the kernel spreads them over both workers
            assert b'"backend": "gpu"' in _get(proxy.port)
        deadline = time.monotonic() + 5
        while _requests_counted(proxy) < before + 40 and time.monotonic() < deadline:
            time.sleep(0.1)  # workers send their counts every 0.2 s
        assert _requests_counted(proxy) == before + 40
    finally:
        proxy.stop()


async def test_a_switch_closes_websockets_with_1012_in_every_worker(proxy: Proc) -> None:
    try:
        async with aiohttp.ClientSession() as session:
            sockets = [
                await session.ws_connect(f"http://127.0.0.1:{proxy.port}/ws") for _ in range(6)
            ]
            for ws in sockets:
                await ws.send_str("whoami")
                assert (await ws.receive_str()) == "gpu"
            await asyncio.to_thread(_control, proxy, "/admin/failover", "POST")
            for ws in sockets:
                message = await asyncio.wait_for(ws.receive(), 5)
                assert message.type == aiohttp.WSMsgType.CLOSE
                assert message.data == 1012
            ws = await session.ws_connect(f"http://127.0.0.1:{proxy.port}/ws")
            await ws.send_str("whoami")
            assert (await ws.receive_str()) == "cpu"
            await ws.close()
    finally:
        proxy.stop()


def test_a_dead_worker_is_replaced_and_the_other_keeps_its_connections(proxy: Proc) -> None:
    connections = [
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5) for _ in range(16)
    ]
    try:
        for conn in connections:
            assert b"200 OK" in _get(proxy.port, conn)
        victim, survivor = _workers_of(proxy)
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.5)
        alive = 0
        for conn in connections:
            with contextlib.suppress(OSError):
                alive += b"200 OK" in _get(proxy.port, conn)
        # The survivor's connections (the kernel gave it some of the 16) still answer.
        assert 0 < alive < len(connections)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            workers = _workers_of(proxy)
            if len(workers) == 2 and victim not in workers:
                break
            time.sleep(0.1)
        assert survivor in workers
        assert len(workers) == 2
        for _ in range(10):
            assert b"200 OK" in _get(proxy.port)
    finally:
        for conn in connections:
            conn.close()
        proxy.stop()


def test_sigterm_stops_the_controller_and_its_workers(proxy: Proc) -> None:
    workers = _workers_of(proxy)
    try:
        proxy.popen.send_signal(signal.SIGTERM)
        assert proxy.popen.wait(timeout=20) == 0
        for pid in workers:
            deadline = time.monotonic() + 5
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not os.path.exists(f"/proc/{pid}"), f"worker {pid} outlived the controller"
    finally:
        proxy.stop()
