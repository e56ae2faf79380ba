"""Raw sockets for attack tests: a counting upstream, a byte-exact client, and a proxy process.

The upstream parses HTTP/1.1 itself, strictly and simply (Content-Length or chunked, nothing
else), records every request it receives on any connection, and answers each with a small 200 or,
for ``/respond/<name>``, with a canned raw response. A request smuggled past the proxy shows up
as one more request in ``seen``; a body the proxy forwarded inconsistently shows up as garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.support.processes import Proc, start_proxy

BIG = 20 * 1024 * 1024
CANNED: dict[str, bytes] = {}


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool = True


@dataclass
class CountingUpstream:
    """An HTTP/1.1 origin on its own thread and loop, so module-scoped fixtures can share it."""

    seen: list[Seen] = field(default_factory=list)
    garbage: list[bytes] = field(default_factory=list)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests(self, marker: str = "") -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path != "/healthz" and marker in s.path]

    # -------------------------------------------------------------------------- serving

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            return await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return None

    async def _read_body(
        self, reader: asyncio.StreamReader, headers: dict[str, str]
    ) -> tuple[bytes, bool]:
        try:
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    if not re.fullmatch(rb"[0-9a-fA-F]{1,16}\r\n", size_line):
                        raise ValueError(f"bad chunk size {size_line[:40]!r}")
                    size = int(size_line, 16)
                    if size == 0:
                        if await reader.readexactly(2) != b"\r\n":
                            raise ValueError("trailers or garbage after the last chunk")
                        return body, True
                    body += await reader.readexactly(size)
                    if await reader.readexactly(2) != b"\r\n":
                        raise ValueError("chunk not followed by CRLF")
            length = int(headers.get("content-length", "0"))
            return await reader.readexactly(length), True
        except asyncio.IncompleteReadError as exc:
            return exc.partial, False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (head := await self._read_head(reader)) is not None:
                lines = head.decode("latin-1").split("\r\n")
                method, path, _version = lines[0].split(" ", 2)
                fields = [tuple(line.split(":", 1)) for line in lines[1:] if line]
                headers = [(k.strip(), v.strip()) for k, v in fields]
                lower = {k.lower(): v for k, v in headers}
                body, complete = await self._read_body(reader, lower)
                with self.lock:
                    self.seen.append(Seen(method, path, headers, body, complete))
                if not complete:
                    return
                await self._answer(writer, method, path)
        except (ValueError, ConnectionError) as exc:
            with self.lock:
                self.garbage.append(str(exc).encode())
        except asyncio.CancelledError:
            return  # the fixture is tearing the upstream down
        finally:
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, method: str, path: str) -> None:
        if path.startswith("/respond/"):
            writer.write(CANNED[path.removeprefix("/respond/")])
        elif path.startswith("/big"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
            piece = b"b" * (1 << 20)
            for _ in range(BIG >> 20):
                writer.write(piece)
                await writer.drain()
        else:
            body = b'{"status":"alive"}' if path == "/healthz" else f"seen {path}".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n")
            writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()

    # ------------------------------------------------------------------------ lifecycle

    def run(self) -> Iterator[CountingUpstream]:
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()

        async def main() -> None:
            server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await stop.wait()
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        thread.start()
        assert ready.wait(10)
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(10)
            loop.close()


def proxy_in_front(upstream: CountingUpstream, *flags: str) -> Proc:
    """The real proxy CLI with both backends on ``upstream`` (two origins: two host names)."""
    return start_proxy(
        f"http://127.0.0.1:{upstream.port}",
        f"http://localhost:{upstream.port}",
        "--fall",
        "2",
        "--health-interval",
        "0.5",
        *flags,
    )


# Short limits so that slow-client tests take seconds; the defaults are in docs/SECURITY.md.
FAST_LIMITS = (
    "--limits-header-timeout",
    "1",
    "--limits-body-timeout",
    "1",
    "--limits-send-timeout",
    "2",
    "--limits-keepalive-timeout",
    "3",
    "--log-level",
    "warning",
)


@pytest.fixture(scope="module")
def proxy(upstream: CountingUpstream) -> Iterator[Proc]:
    """The proxy with FAST_LIMITS in front of the module's `upstream` fixture (each module that
    imports this fixture brings its own upstream)."""
    proc = proxy_in_front(upstream, *FAST_LIMITS)
    try:
        yield proc
    finally:
        proc.stop()


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 5.0, limit: int = 1 << 20) -> bytes:
    """All the peer sends until it closes; b"<open>" is appended if ``timeout`` passes first."""
    sock.settimeout(timeout)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(out) < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return out + b"<open>"
        except ConnectionResetError:
            return out + b"<reset>"
        if not chunk:
            return out
        out += chunk
    return out + b"<open>"


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with connect(port, timeout) as sock:
        with contextlib.suppress(OSError):  # the proxy may refuse before all of it is sent
            sock.sendall(data)
        return read_until_closed(sock, timeout)


def status_of(reply: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", reply)
    return int(match.group(1)) if match else 0


def get(port: int, path: str = "/ok", timeout: float = 5.0) -> bytes:
    request = f"GET {path} HTTP/1.1\r\nHost: ide.test\r\nConnection: close\r\n\r\n".encode()
    return exchange(port, request, timeout)
