"""A listening socket of the data plane: its limits, its connections, its graceful end.

``Listener.start`` binds (with TLS when given a context; a handshake must finish within the head
timeout, not asyncio's 60 s); ``Listener.stop`` stops accepting, lets busy connections finish their
response for up to ``grace`` seconds while idle ones close at once, then cuts what is left.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from proxy.config import HostPort, LimitsConfig
from proxy.tasks import TaskSet

from .connection import ClientConnection, Exchange
from .messages import RequestHead

__all__ = ["ConnectionCounter", "Handler", "Listener", "ListenerContext"]

log = logging.getLogger("dumont.dataplane")


class Handler(Protocol):
    """Turns a screened request head into the exchange that answers it."""

    def start(self, connection: ClientConnection, head: RequestHead) -> Exchange: ...


class ConnectionCounter:
    """Open connections of one listener, in total and per client address."""

    def __init__(self, total: int, per_ip: int) -> None:
        self.limit_total = total
        self.limit_per_ip = per_ip
        self.total = 0
        self.by_ip: Counter[str] = Counter()

    def admit(self, ip: str) -> int | None:
        """None when admitted (and counted), else the status to refuse with."""
        if self.total >= self.limit_total:
            return 503
        if self.by_ip[ip] >= self.limit_per_ip:
            return 429
        self.total += 1
        self.by_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        self.total -= 1
        self.by_ip[ip] -= 1
        if self.by_ip[ip] <= 0:
            del self.by_ip[ip]


@dataclass(eq=False)
class ListenerContext:
    """What the connections of one listener share."""

    limits: LimitsConfig
    handler: Handler
    tls: bool = False
    access_log: bool = False
    hsts: str | None = None  # the Strict-Transport-Security value, when sent
    draining: bool = False
    connections: set[ClientConnection] = field(default_factory=set)
    tasks: TaskSet = field(default_factory=lambda: TaskSet("dataplane"))
    counter: ConnectionCounter = field(init=False)
    max_head_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        limits = self.limits
        self.counter = ConnectionCounter(limits.max_connections, limits.max_connections_per_ip)
        self.max_head_bytes = (
            limits.max_url_length + limits.max_header_count * limits.max_header_size + 4096
        )


class Listener:
    def __init__(
        self,
        context: ListenerContext,
        where: HostPort,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.context = context
        self.where = where
        self.ssl_context = ssl_context
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ClientConnection(self.context),
            self.where.host,
            self.where.port,
            ssl=self.ssl_context,
            backlog=1024,
            reuse_address=True,
            ssl_handshake_timeout=self.context.limits.header_timeout if self.ssl_context else None,
        )

    @property
    def address(self) -> HostPort:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return HostPort(host, port)

    def stop_accepting(self) -> None:
        """No new connections; idle ones close now, busy ones after their response."""
        self.context.draining = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.context.connections):
            connection.drain()

    async def stop(self, grace: float) -> None:
        self.stop_accepting()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.context.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.context.connections):
            connection.abort()
        await self.context.tasks.close()
        if self._server is not None:
            await self._server.wait_closed()
