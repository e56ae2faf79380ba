"""What an exchange needs of the browser's side, whichever protocol carries the request.

An HTTP/1.1 connection (proxy.dataplane.connection) carries one request at a time; an HTTP/2
stream (proxy.dataplane.h2_stream) is one request among many on a connection. Both satisfy
``ClientSide``, so the handlers and the exchange logic (retries, the transition page, the
watcher, accounting) are written once; each side builds the exchange that speaks its wire format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxy.headers import ClientFacts
    from proxy.observe import TrafficObserver

    from .connection import Exchange
    from .exchange import Destination
    from .listener import ListenerContext
    from .messages import RequestHead
    from .router import Router
    from .upstream import UpstreamPool

__all__ = ["ClientSide"]


class ClientSide(Protocol):
    context: ListenerContext
    peer: str
    scheme: str
    facts: ClientFacts | None  # who is asking, kept per connection (proxy.dataplane.handlers)
    request_started: float  # time.perf_counter() when the request's head was whole
    response_started: bool  # a response byte went out: from then on a failure can only cut
    keep_alive: bool

    def http_exchange(
        self,
        head: RequestHead,
        destination: Destination,
        facts: ClientFacts,
        *,
        pages: UpstreamPool,
        watcher: bool,
        hsts: str | None,
        extra_out: tuple[bytes, ...] = (),
    ) -> Exchange:
        """The exchange that forwards ``head`` and writes the answer in this side's protocol."""

    def websocket_exchange(
        self,
        head: RequestHead,
        router: Router,
        traffic: TrafficObserver,
        facts: ClientFacts,
        *,
        wait: float,
        hsts: str | None,
    ) -> Exchange:
        """The exchange that opens a backend WebSocket for ``head`` and splices it to this side."""

    def write(self, data: bytes) -> None: ...

    def finished(self, status: int, sent: int, received: int) -> None:
        """The exchange has written its whole response."""

    def abort(self) -> None:
        """Cut the response short: the only honest signal once its head is gone."""

    def pause_reading_for(self, reason: str) -> None: ...

    def resume_reading_for(self, reason: str) -> None: ...
