"""Many idle keep-alive client connections held open against a proxy (issue 13).

Each connection sends one ``GET``, reads the whole answer, then stays open and sends nothing. A
connection that was refused, reset or closed by the proxy, or whose answer was not a 200, is
counted and its reason kept; every close is noticed as it happens (the event loop runs while they
are held), so ``open_now()`` at the end says how many the proxy kept.

Sources are spread over 127.0.0.0/8 (127.0.0.1, 127.0.0.2, ...; all of it is loopback on Linux):
each address has its own ~28k ephemeral ports and per-address caps count fewer connections.

Only the standard library is imported, so the tests can use this module as ``bench.peers.idle``
while the scripts import it as ``peers.idle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import cast

__all__ = ["IdleConnections", "IdleReport", "hold_idle", "raise_nofile_limit", "source_addresses"]

_HEAD_END = b"\r\n\r\n"
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


def raise_nofile_limit(wanted: int) -> int:
    """Raise this process's RLIMIT_NOFILE towards ``wanted``; return the soft limit now in force.

    The soft limit goes up to the hard one; the hard one too when the process may (root, or
    CAP_SYS_RESOURCE): HAProxy refuses to start unless it can have about two descriptors per
    ``maxconn``. Children started afterwards inherit both. The caller decides whether the result
    is enough. Never part of the product: only the bench and tests call it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and wanted > hard:
        with contextlib.suppress(ValueError, OSError):  # not privileged, or above fs.nr_open
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def source_addresses(count: int, per_address: int = 200) -> list[str]:
    """``count`` connections' source addresses, at most ``per_address`` on each of 127.0.0.x."""
    spread = max(1, -(-count // per_address))
    if spread > 250:
        raise ValueError(f"{count} connections need more than 250 addresses at {per_address} each")
    return [f"127.0.0.{1 + i % spread}" for i in range(count)]


class _IdleClient(asyncio.Protocol):
    """One connection: send the request, check the answer is a whole 200, then note any close."""

    def __init__(self, request: bytes, answered: asyncio.Future[None]) -> None:
        self.request = request
        self.answered = answered
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.body_left = -1  # -1: head not read yet
        self.closed_because: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's classes: cast, do not check.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.answered.done():
            self._fail("bytes after the answer")
            return
        self.buffer += data
        if self.body_left < 0:
            head, sep, rest = self.buffer.partition(_HEAD_END)
            if not sep:
                return
            self.body_left = self._body_length(head)
            if self.body_left < 0:
                return
            self.buffer = rest
        if len(self.buffer) > self.body_left:
            self._fail("more bytes than Content-Length")
        elif len(self.buffer) == self.body_left:
            self.buffer = b""
            self.answered.set_result(None)

    def _body_length(self, head: bytes) -> int:
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "200":
            self._fail(f"answer {lines[0][:40]!r}")
            return -1
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                return int(value.strip())
        self._fail("answer without Content-Length")
        return -1

    def _fail(self, reason: str) -> None:
        self.closed_because = self.closed_because or reason
        if not self.answered.done():
            self.answered.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool:
        self._fail("closed by the proxy" if self.answered.done() else "closed before the answer")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"lost: {exc!r}" if exc else "closed by the proxy"
        self.closed_because = self.closed_because or reason
        if not self.answered.done():
            self.answered.set_exception(ConnectionError(reason))


@dataclass
class IdleReport:
    wanted: int
    answered: int  # connections whose request was answered with a 200
    open_at_end: int
    seconds_to_open: float
    errors: Counter[str] = field(default_factory=Counter)  # reason -> connections

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class IdleConnections:
    """The connections being held; ``report()`` at any moment says what became of them."""

    wanted: int
    clients: list[_IdleClient] = field(default_factory=list)
    failed_to_open: Counter[str] = field(default_factory=Counter)
    answered: int = 0
    seconds_to_open: float = 0.0

    def open_now(self) -> int:
        return sum(1 for c in self.clients if c.closed_because is None)

    def report(self) -> IdleReport:
        errors = Counter(self.failed_to_open)
        errors.update(c.closed_because for c in self.clients if c.closed_because is not None)
        return IdleReport(self.wanted, self.answered, self.open_now(), self.seconds_to_open, errors)

    def close(self) -> None:
        """Reset every connection: closed with a FIN, 10,000 of them would sit in TIME-WAIT here
        for a minute on a shared machine."""
        for client in self.clients:
            if client.transport is None:
                continue
            sock = client.transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            client.transport.abort()


async def _open_one(
    held: IdleConnections, port: int, source: str, request: bytes, timeout: float
) -> None:
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[None] = loop.create_future()
    client: _IdleClient | None = None
    try:
        async with asyncio.timeout(timeout):
            _, client = await loop.create_connection(
                lambda: _IdleClient(request, answered), "127.0.0.1", port, local_addr=(source, 0)
            )
            held.clients.append(client)
            await answered
    except OSError as exc:  # refused, reset, closed (ConnectionError) or TimeoutError
        if client is None:
            held.failed_to_open[f"connect: {type(exc).__name__} {exc.errno or ''}".strip()] += 1
        elif client.closed_because is None:
            client.closed_because = "no answer within the timeout"
            if client.transport is not None:
                client.transport.abort()
    else:
        held.answered += 1


@contextlib.asynccontextmanager
async def hold_idle(
    port: int,
    count: int,
    *,
    path: str = "/",
    host: str = "ide.test",
    sources: Sequence[str] | None = None,
    in_flight: int = 64,
    timeout: float = 10.0,
    open_within: float = 60.0,
) -> AsyncIterator[IdleConnections]:
    """Open ``count`` connections to 127.0.0.1:``port``, each answered once, and hold them.

    At most ``in_flight`` are being opened at a time (a burst far past the listen backlog only
    measures SYN retransmits). One connection gets ``timeout`` seconds for its connect and its
    answer; none is started after ``open_within`` seconds (those count as errors), so a proxy
    that stops answering costs a minute, not count/in_flight timeouts. Every connection is
    aborted when the block ends, however it ends.
    """
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: idle-holder\r\n\r\n".encode()
    addresses = list(sources) if sources is not None else source_addresses(count)
    held = IdleConnections(count)
    gate = asyncio.Semaphore(in_flight)
    started = time.monotonic()

    async def gated(source: str) -> None:
        async with gate:
            if time.monotonic() - started > open_within:
                held.failed_to_open[f"not started within {open_within:g} s"] += 1
                return
            await _open_one(held, port, source, request, timeout)

    try:
        async with asyncio.TaskGroup() as group:
            for source in addresses[:count]:
                group.create_task(gated(source))
        held.seconds_to_open = time.monotonic() - started
        yield held
    finally:
        held.close()
        await asyncio.sleep(0)  # let the aborts run their connection_lost callbacks
