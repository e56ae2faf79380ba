"""Slow clients against the real proxy: slow heads, stalled bodies, idle keep-alive, slow readers.

The proxy runs with 1 s head and body timeouts, 2 s send timeout and 3 s keep-alive (conftest).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.request

from tests.support.processes import Proc, start_proxy, start_upstream
from tests.support.rawnet import (
    BIG,
    FAST_LIMITS,
    CountingUpstream,
    connect,
    get,
    read_until_closed,
    status_of,
)


def backend_health(proxy: Proc) -> dict[str, object]:
    url = f"http://127.0.0.1:{proxy.port}/__dumont/status"
    with urllib.request.urlopen(url, timeout=5) as r:
        primary: dict[str, object] = json.load(r)["backends"]["primary"]
    return primary


def test_slow_head_gets_408_then_close(proxy: Proc) -> None:
    started = time.monotonic()
    with connect(proxy.port) as sock:
        sock.sendall(b"GET /c-slow-head HTTP/1.1\r\nHost: ide.test\r\n")
        sock.settimeout(0.3)
        reply = b""
        for i in range(20):  # one header line every 0.3 s: never a whole head
            with contextlib.suppress(OSError):
                sock.sendall(b"X-%d: 1\r\n" % i)
            try:
                reply += sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if reply:
                break
        reply += read_until_closed(sock, 5)
    assert status_of(reply) == 408, reply[:200]
    assert not reply.endswith(b"<open>")
    assert time.monotonic() - started < 6  # 1 s timeout; slack for a loaded machine


def test_silent_connection_is_closed_after_the_head_timeout(proxy: Proc) -> None:
    with connect(proxy.port) as sock:
        started = time.monotonic()
        assert read_until_closed(sock, 8) == b""
        assert 0.8 < time.monotonic() - started < 6


def test_idle_keepalive_connection_is_closed(proxy: Proc) -> None:
    with connect(proxy.port) as sock:
        sock.sendall(b"GET /c-keepalive HTTP/1.1\r\nHost: ide.test\r\n\r\n")
        started = time.monotonic()
        reply = read_until_closed(sock, 12)
        assert status_of(reply) == 200
        assert not reply.endswith(b"<open>")
        # Not by the 1 s head timeout (no head was started) but by the 3 s keep-alive.
        assert 2.5 < time.monotonic() - started < 10


def test_stalled_body_gets_408_and_does_not_blame_the_backend(
    proxy: Proc, upstream: CountingUpstream
) -> None:
    with connect(proxy.port) as sock:
        sock.sendall(
            b"POST /c-stalled-body HTTP/1.1\r\nHost: ide.test\r\nContent-Length: 100\r\n\r\n"
            + b"x" * 10
        )
        started = time.monotonic()
        reply = read_until_closed(sock, 10)
    assert status_of(reply) == 408, reply[:200]
    assert time.monotonic() - started < 7
    seen = upstream.requests("/c-stalled-body")
    assert len(seen) <= 1
    assert all(not s.complete for s in seen)
    health = backend_health(proxy)
    assert health["healthy"] is True
    assert health["fail_streak"] == 0, health


def test_client_leaving_mid_upload_does_not_blame_the_backend(proxy: Proc) -> None:
    before = backend_health(proxy)
    with connect(proxy.port) as sock:
        sock.sendall(
            b"POST /c-left HTTP/1.1\r\nHost: ide.test\r\nContent-Length: 1000000\r\n\r\n"
            + b"x" * 1000
        )
        time.sleep(0.3)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    time.sleep(0.5)
    health = backend_health(proxy)
    # A passive failure would have reset the streak of passed checks.
    assert isinstance(before["ok_streak"], int)
    assert isinstance(health["ok_streak"], int)
    assert health["ok_streak"] >= before["ok_streak"], (before, health)


def test_slow_reader_is_cut_off(proxy: Proc) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.connect(("127.0.0.1", proxy.port))
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: ide.test\r\n\r\n")
        time.sleep(6)  # read nothing: the proxy's buffer fills, then send_timeout (2 s) cuts it
        # The 4 KiB receive window makes reading slow: a connection still open would not finish
        # 20 MiB within 10 s. A connection that was cut ends with what the kernels held.
        received = read_until_closed(sock, 10, limit=BIG * 2)
    finally:
        sock.close()
    assert not received.endswith(b"<open>"), "the proxy kept a reader that read nothing for 6 s"
    assert len(received) < BIG
    assert status_of(get(proxy.port)) == 200


def test_slow_clients_do_not_starve_others(proxy: Proc) -> None:
    crawlers = [connect(proxy.port) for _ in range(50)]
    try:
        for sock in crawlers:
            sock.sendall(b"GET /c-crawl HTTP/1.1\r\nHost: ide.test\r\n")
        assert status_of(get(proxy.port, "/c-while-crawling")) == 200
    finally:
        for sock in crawlers:
            sock.close()


def _ws_frame(payload: bytes) -> bytes:
    # A masked binary frame (a zero mask key is valid and leaves the payload as it is).
    return b"\x82\xff" + len(payload).to_bytes(8, "big") + b"\x00\x00\x00\x00" + payload


def test_websocket_reader_that_stops_reading_is_cut_off() -> None:
    gpu, cpu = start_upstream("gpu"), start_upstream("cpu")
    proxy: Proc | None = None
    sock = socket.socket()
    try:
        proxy = start_proxy(
            f"http://127.0.0.1:{gpu.port}", f"http://127.0.0.1:{cpu.port}", *FAST_LIMITS
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", proxy.port))
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: ide.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        sock.settimeout(5)
        assert sock.recv(12) == b"HTTP/1.1 101"
        # The backend echoes every frame; this client never reads the echoes.
        sock.settimeout(0.5)
        frame = _ws_frame(b"e" * 65536)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            try:
                sock.sendall(frame)
            except TimeoutError:
                continue
            except OSError:
                break  # already cut off
        received = read_until_closed(sock, 10, limit=1 << 30)
        assert not received.endswith(b"<open>"), "the proxy kept a WebSocket nobody read"
    finally:
        sock.close()
        for proc in (proxy, gpu, cpu):
            if proc is not None:
                proc.stop()
