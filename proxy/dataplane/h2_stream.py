"""One HTTP/2 stream, as an exchange sees the browser's side (proxy.dataplane.client.ClientSide).

Flow control, both ways, per stream, so that one large transfer cannot starve the connection's
other streams nor pile up memory:

- browser -> backend: DATA is handed to the exchange at once, but its window is given back to the
  browser only while the exchange is not paused (the backend's send buffer is below its high-water
  mark, or the body buffer waiting for a backend connection is small). A paused stream's browser
  can send at most one stream window more, then waits; the other streams' windows are untouched.
- backend -> browser: response bytes wait in the stream's ``outbox`` until the connection sends
  them, one frame per stream per round (proxy.dataplane.h2_connection) as the browser's windows
  allow. Past ``OUTBOX_HIGH`` bytes the exchange is told to stop reading its backend connection;
  below ``OUTBOX_LOW`` it reads again. Memory per stream stays around one high-water mark.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING

from .h2_exchange import H2Exchange
from .h2_websocket import H2WebSocketExchange
from .upstream import WRITE_HIGH_WATER, WRITE_LOW_WATER

if TYPE_CHECKING:
    from proxy.headers import ClientFacts
    from proxy.observe import TrafficObserver

    from .connection import Exchange
    from .exchange import Destination
    from .h2_connection import H2Connection
    from .listener import ListenerContext
    from .messages import RequestHead
    from .router import Router
    from .upstream import UpstreamPool

__all__ = ["OUTBOX_HIGH", "OUTBOX_LOW", "H2Stream"]

OUTBOX_HIGH = WRITE_HIGH_WATER
OUTBOX_LOW = WRITE_LOW_WATER


class H2Stream:
    """A request and its response on one stream; the connection drives it."""

    keep_alive = True  # streams end, the connection stays (GOAWAY is the connection's business)

    def __init__(self, connection: H2Connection, stream_id: int) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.context: ListenerContext = connection.context
        self.peer = connection.peer
        self.scheme = "https"
        self.request_started = time.perf_counter()
        self.response_started = False
        self.exchange: Exchange | None = None
        self.head: RequestHead | None = None
        self.request_complete = False
        self.response_done = False  # the exchange called ``finished`` (or the stream was reset)
        self.reset = False
        self.websocket = False  # an RFC 8441 stream: its request "body" is the browser's frames
        self.body_seen = 0.0  # when request body bytes last came (the body timeout)
        # browser -> backend
        self._paused_for: set[str] = set()
        self._unacked = 0  # flow-controlled bytes received while paused, not yet given back
        # backend -> browser
        self.outbox: deque[bytes] = deque()
        self.outbox_size = 0
        self.end_after_outbox = False  # END_STREAM goes with the last queued byte
        self.throttled = False  # the exchange was told to stop reading its backend

    # ------------------------------------------------------------------ ClientSide: who asks

    @property
    def facts(self) -> ClientFacts | None:
        return self.connection.facts

    @facts.setter
    def facts(self, value: ClientFacts | None) -> None:
        self.connection.facts = value  # one browser per connection: its facts are shared

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
        return H2Exchange(
            self, head, destination, facts,
            pages=pages, watcher=watcher, hsts=hsts, extra_out=extra_out,
        )  # fmt: skip

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
        return H2WebSocketExchange(self, head, router, traffic, facts, wait=wait, hsts=hsts)

    # ------------------------------------------------------------------ the request's body

    def data_received(self, data: bytes, flow_controlled: int) -> None:
        self.body_seen = self.connection.loop.time()
        if self.exchange is not None and data:
            self.exchange.body_received(data)
        if self._paused_for:
            self._unacked += flow_controlled
        else:
            self.connection.acknowledge(self.stream_id, flow_controlled)

    def body_complete(self) -> None:
        self.request_complete = True
        if self.exchange is not None:
            self.exchange.body_complete()

    @property
    def reading_paused(self) -> bool:
        return bool(self._paused_for)

    def pause_reading_for(self, reason: str) -> None:
        self._paused_for.add(reason)

    def resume_reading_for(self, reason: str) -> None:
        self._paused_for.discard(reason)
        if not self._paused_for and self._unacked:
            unacked, self._unacked = self._unacked, 0
            self.connection.acknowledge(self.stream_id, unacked)

    # ------------------------------------------------------------------ the response

    def send_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        if self.reset:
            return
        self.response_started = True
        self.connection.send_headers(self.stream_id, headers, end_stream)
        if end_stream:
            self.end_after_outbox = True

    def write(self, data: bytes) -> None:
        """Response body bytes (the head went first with ``send_headers``)."""
        if self.reset or not data:
            return
        self.outbox.append(data)
        self.outbox_size += len(data)
        if self.outbox_size > OUTBOX_HIGH and not self.throttled and self.exchange is not None:
            self.throttled = True
            self.exchange.client_writable(False)
        self.connection.want_to_send(self)

    def end(self) -> None:
        """The response is whole: END_STREAM after whatever is queued."""
        if self.reset or self.end_after_outbox:
            return
        self.end_after_outbox = True
        self.connection.want_to_send(self)

    def take(self, most: int) -> bytes:
        """Up to ``most`` queued bytes, for one DATA frame (the connection calls this)."""
        first = self.outbox[0]
        if len(first) <= most:
            self.outbox.popleft()
            piece = first
        else:
            piece, self.outbox[0] = first[:most], first[most:]
        self.outbox_size -= len(piece)
        if self.throttled and self.outbox_size < OUTBOX_LOW and self.exchange is not None:
            self.throttled = False
            self.exchange.client_writable(True)
        return piece

    def finished(self, status: int, sent: int, received: int) -> None:
        """The exchange has handed over its whole response."""
        self.response_done = True
        self.exchange = None
        if self.head is not None:
            self.connection.stream_finished(self, status, sent)

    def abort(self) -> None:
        """Cut this response short: RST_STREAM, the other streams go on."""
        self.connection.reset_stream(self, internal=True)

    # ------------------------------------------------------------------ the end

    def lost(self) -> None:
        """The browser reset the stream, or the connection is gone."""
        self.reset = True
        self.outbox.clear()
        self.outbox_size = 0
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.client_lost()
