"""A backend: one code-server the proxy can route to, with its connection pool and its live traffic.

The Backend knows what is in flight to it so that a switch can act on that traffic: WebSockets are
closed with 1012 (service restart) so clients reconnect, and idempotent requests still waiting for
response headers are re-sent to the new backend instead of failing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from yarl import URL

from .failover import Role

__all__ = ["Backend", "LiveSocket", "PendingRequest"]

# Enough for every browser tab's parallel requests; the per-host cap protects the backend.
POOL_LIMIT = 512
# Below Node's default server.keepAliveTimeout (5 s), which code-server uses: a connection the
# backend already closed must not be reused, or its reset counts as a passive failure toward fall
# (seen as a false failover by the continuity run).
KEEPALIVE_SECONDS = 4.0


class LiveSocket(Protocol):
    """A relayed WebSocket that a switch or a shutdown can end with a close code."""

    async def shutdown(self, code: int, message: bytes) -> None: ...


@dataclass(eq=False)
class PendingRequest:
    """A request task waiting for response headers; ``rerouted`` marks why it was cancelled."""

    task: asyncio.Task[object]
    rerouted: bool = False


@dataclass(eq=False)
class Backend:
    role: Role
    url: URL
    connect_timeout: float
    session: aiohttp.ClientSession = field(init=False)
    probe_session: aiohttp.ClientSession = field(init=False)
    websockets: set[LiveSocket] = field(default_factory=set)
    waiting: set[PendingRequest] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.session = self._new_session()
        self.probe_session = self._new_probe_session()
        self._prefix = self._prefix_of(self.url)

    @staticmethod
    def _prefix_of(url: URL) -> str:
        return str(url.origin()) + url.path.rstrip("/")

    @property
    def name(self) -> str:
        return "gpu" if self.role == "primary" else "cpu"

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=0,
            limit_per_host=POOL_LIMIT,
            keepalive_timeout=KEEPALIVE_SECONDS,
            ttl_dns_cache=10,
            enable_cleanup_closed=False,
        )
        return aiohttp.ClientSession(
            connector=connector,
            # The proxy relays bytes: no decompression, no cookie jar, no default headers.
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout),
            read_bufsize=2**18,
            max_line_size=16384,
            max_field_size=16384,
        )

    def _new_probe_session(self) -> aiohttp.ClientSession:
        # Health checks get their own small pool: they must never queue behind user traffic.
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=2, keepalive_timeout=KEEPALIVE_SECONDS),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    def target(self, raw_path: str) -> URL:
        """The backend URL for a request's raw path and query, kept byte-for-byte."""
        return URL(self._prefix + raw_path, encoded=True)

    async def replace_url(self, url: URL) -> None:
        """Point this role at another machine; connections to the old one are closed."""
        old = (self.session, self.probe_session)
        self.url = url
        self._prefix = self._prefix_of(url)
        self.session = self._new_session()
        self.probe_session = self._new_probe_session()
        for session in old:
            await session.close()

    def reroute_waiting(self) -> int:
        """Cancel idempotent requests waiting for headers so they are re-sent elsewhere."""
        count = 0
        for pending in list(self.waiting):
            if not pending.rerouted and not pending.task.done():
                pending.rerouted = True
                pending.task.cancel("dumont: backend switched")
                count += 1
        return count

    async def close_websockets(self, code: int, message: bytes) -> None:
        sockets = list(self.websockets)
        if sockets:
            await asyncio.gather(
                *(ws.shutdown(code, message) for ws in sockets), return_exceptions=True
            )

    async def close(self) -> None:
        await self.session.close()
        await self.probe_session.close()
