"""A backend: one code-server the proxy can route to, with its connection pools and live traffic.

The Backend knows what is in flight to it so that a switch can act on that traffic: WebSockets are
closed with 1012 (service restart) so clients reconnect, and idempotent requests still waiting for
response headers are re-sent to the new backend instead of failing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from yarl import URL

from .dataplane.upstream import KEEPALIVE_SECONDS, UpstreamPool
from .failover import Role

__all__ = ["KEEPALIVE_SECONDS", "Backend", "LiveSocket", "Reroutable"]

# Enough idle connections for every browser tab's parallel requests.
POOL_IDLE = 512


class LiveSocket(Protocol):
    """A relayed WebSocket that a switch or a shutdown can end with a close code."""

    async def shutdown(self, code: int, message: bytes) -> None: ...


class Reroutable(Protocol):
    """A request waiting for response headers that can be sent to another backend."""

    def reroute(self) -> bool:
        """Re-send elsewhere; False when it is too late (an answer has begun)."""


@dataclass(eq=False)
class Backend:
    role: Role
    url: URL
    connect_timeout: float
    pool: UpstreamPool = field(init=False)
    probe_pool: UpstreamPool = field(init=False)
    websockets: set[LiveSocket] = field(default_factory=set)
    waiting: set[Reroutable] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._point_at(self.url)

    def _point_at(self, url: URL) -> None:
        self.url = url
        self.path_prefix = url.path.rstrip("/")
        self._prefix = str(url.origin()) + self.path_prefix
        assert url.host is not None  # config accepts no URL without a host
        tls = url.scheme == "https"
        port = url.port or (443 if tls else 80)
        self.pool = UpstreamPool(
            url.host, port, tls=tls, connect_timeout=self.connect_timeout, max_idle=POOL_IDLE
        )
        # Health checks get their own small pool: they must never queue behind user traffic.
        self.probe_pool = UpstreamPool(
            url.host, port, tls=tls, connect_timeout=self.connect_timeout, max_idle=2
        )
        self.host_header = url.raw_host if url.port is None else f"{url.raw_host}:{url.port}"

    @property
    def name(self) -> str:
        return "gpu" if self.role == "primary" else "cpu"

    def target(self, raw_path: str) -> URL:
        """The backend URL for a request's raw path and query, kept byte-for-byte."""
        return URL(self._prefix + raw_path, encoded=True)

    async def replace_url(self, url: URL) -> None:
        """Point this role at another machine; connections to the old one are closed."""
        old = (self.pool, self.probe_pool)
        self._point_at(url)
        for pool in old:
            pool.close()

    def reroute_waiting(self) -> int:
        """Send idempotent requests waiting for headers to whichever backend serves now."""
        return sum(1 for pending in list(self.waiting) if pending.reroute())

    async def close_websockets(self, code: int, message: bytes) -> None:
        sockets = list(self.websockets)
        if sockets:
            await asyncio.gather(
                *(ws.shutdown(code, message) for ws in sockets), return_exceptions=True
            )

    async def close(self) -> None:
        self.pool.close()
        self.probe_pool.close()
