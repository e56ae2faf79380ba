"""A listening socket of the data plane: its limits, its connections, its graceful end.

With TLS and ``http2.enabled`` ALPN offers ``h2`` before ``http/1.1``; a connection that chose h2
is handed to proxy.dataplane.h2_connection as soon as the handshake is done. Cleartext HTTP/2
(h2c upgrades, prior knowledge) is not served: such bytes are HTTP/1.1 errors, as before.

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
from typing import Any, Protocol

from proxy.config import HostPort, Http2Config, LimitsConfig
from proxy.tasks import TaskSet

from .client import ClientSide
from .connection import ClientConnection, Exchange
from .messages import RequestHead

__all__ = ["ConnectionCounter", "Handler", "Listener", "ListenerContext", "ProtocolCounts"]

log = logging.getLogger("dumont.dataplane")


class Handler(Protocol):
    """Turns a screened request head into the exchange that answers it."""

    def start(self, connection: ClientSide, head: RequestHead) -> Exchange: ...


class Connection(Protocol):
    """A browser connection, whichever protocol: what a graceful end needs of it."""

    def drain(self) -> None:
        """Idle: close now; busy: finish what was begun (HTTP/2: after a GOAWAY), then close."""

    def abort(self) -> None: ...


class ProtocolCounts:
    """Connections, requests and GOAWAYs by protocol, for /metrics: the per-workspace request
    metrics keep their names and labels, and these say which protocol carried the traffic."""

    def __init__(self) -> None:
        self.connections: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.goaways: Counter[str] = Counter()

    def connection_opened(self, protocol: str) -> None:
        self.connections[protocol] += 1

    def request_started(self, protocol: str) -> None:
        self.requests[protocol] += 1

    def goaway(self, reason: str) -> None:
        self.goaways[reason] += 1

    def render(self) -> bytes:
        """Prometheus' text format (the process metrics of proxy.sites are joined as bytes)."""
        out = []
        for name, help_, label, counts in (
            ("dumont_client_connections_total", "Browser connections accepted", "protocol",
             self.connections),
            ("dumont_client_requests_total", "Requests begun, by the protocol that carried them",
             "protocol", self.requests),
            ("dumont_http2_goaways_total", "HTTP/2 connections the proxy ended early",
             "reason", self.goaways),
        ):  # fmt: skip
            out.append(f"# HELP {name} {help_}\n# TYPE {name} counter\n")
            out += [f'{name}{{{label}="{key}"}} {value}\n' for key, value in sorted(counts.items())]
        return "".join(out).encode()


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
    http2: Http2Config | None = None  # None: HTTP/1.1 only (no TLS, or http2.enabled off)
    tls: bool = False
    access_log: bool = False
    hsts: str | None = None  # the Strict-Transport-Security value, when sent
    draining: bool = False
    connections: set[Connection] = field(default_factory=set)
    protocols: ProtocolCounts = field(default_factory=ProtocolCounts)
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
        # Any: uvloop's `sockets` is a list where typeshed says tuple, and compiled code checks.
        server: Any = self._server
        host, port = server.sockets[0].getsockname()[:2]
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
