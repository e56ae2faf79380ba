"""The client side: one asyncio Protocol per browser connection, llhttp parsing, limits and timers.

Per connection, in order of a request's life:

- the door: past ``max_connections`` (503) or ``max_connections_per_ip`` (429) a connection is
  answered and half-closed before anything is parsed;
- the head: a request head must arrive whole within ``header_timeout`` of its first byte (of the
  connection's opening for the first request), else 408; a silent connection is closed quietly.
  A target over ``max_url_length`` is 414; a field over ``max_header_size`` or more than
  ``max_header_count`` fields is 431; anything llhttp refuses is 400; proxy.validation screens
  the rest. Every refusal answers and closes;
- the body: it may not stall for ``body_timeout`` while the proxy waits for it (408, or a cut once
  the response has begun); reading pauses while the backend's side is full;
- the response: a client that leaves the send buffer full for ``send_timeout`` is cut off, and
  while it is full the backend's connection stops being read (backpressure both ways);
- keep-alive: an idle connection is closed after ``keepalive_timeout``.

Pipelining: requests that arrive behind one in flight are queued, with their bodies, and answered
in order; while any is queued the connection is not read (the queue is bounded by what one read
returned). A parse error behind a pipelined request is answered in its turn, then the connection
closes. After a WebSocket's 101 the connection is a byte tunnel (proxy.dataplane.websocket).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import httptools

from proxy.headers import ClientFacts
from proxy.validation import Rejected, is_websocket_upgrade, screen_request

from .exchange import HttpExchange
from .h2_connection import H2Connection
from .messages import RequestHead, closing_response
from .plain import plain_request
from .upstream import WRITE_HIGH_WATER, WRITE_LOW_WATER
from .websocket import WebSocketExchange

if TYPE_CHECKING:
    from proxy.observe import TrafficObserver

    from .exchange import Destination
    from .listener import ListenerContext
    from .router import Router
    from .upstream import UpstreamPool

__all__ = ["ClientConnection", "Exchange"]

log = logging.getLogger("dumont.dataplane")
access_log = logging.getLogger("aiohttp.access")  # the name operators already filter on

# A refused connection is half-closed and given this long to read its answer before it is cut.
REFUSED_LINGER = 2.0


class Exchange(Protocol):
    """What a connection drives: one request's way to an answer (proxy.dataplane.exchange)."""

    def body_received(self, data: bytes) -> None: ...

    def body_complete(self) -> None: ...

    def client_writable(self, writable: bool) -> None: ...

    def client_lost(self) -> None: ...


class _Refusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(eq=False)
class _Queued:
    """A request parsed while another is answered (or the refusal to send in its turn)."""

    head: RequestHead | None
    refusal: _Refusal | None = None
    body: list[bytes] = field(default_factory=list)
    complete: bool = False


def _chose_h2(transport: asyncio.BaseTransport) -> bool:
    tls = transport.get_extra_info("ssl_object")
    return tls is not None and tls.selected_alpn_protocol() == "h2"


class ClientConnection(asyncio.Protocol):
    def __init__(self, context: ListenerContext) -> None:
        self.context = context
        self.limits = context.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.scheme = "https" if context.tls else "http"
        self.facts: ClientFacts | None = None  # who is asking (proxy.dataplane.handlers)
        self._parser = httptools.HttpRequestParser(self)
        self._admitted = False
        self._closing = False
        # the request being parsed
        self._url = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_head = False  # a head has begun and is not whole yet
        self._head_bytes = 0
        self._head_began = 0.0  # when that head's first byte came (0: not yet looked at)
        self._body_left = 0  # Content-Length bytes of the request being parsed still to come
        self._bypass = False  # they come straight from the socket, not through llhttp
        self._parsing: _Queued | None = None
        # the request being answered
        self.exchange: Exchange | None = None
        self._current: _Queued | None = None
        self._queue: deque[_Queued] = deque()
        self.request_started = 0.0
        self.response_started = False
        self.keep_alive = True
        # flow control and timers
        self._paused_for: set[str] = set()
        self.writing_paused = False
        # One timer for the head and keep-alive deadlines, moved only when it must fire sooner:
        # a request costs no timer of its own (see _tick).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._idle_since = 0.0  # when the connection opened or last finished a response
        self._served = False  # a first request has begun (until then the head timeout rules)
        self._body_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._body_seen = 0.0
        self._tunnel: Callable[[bytes], None] | None = None
        self._tail = b""

    # ------------------------------------------------------------------- the door and the head

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        settings = self.context.http2
        if settings is not None and _chose_h2(transport):
            # The browser chose HTTP/2 by ALPN: the connection is an H2Connection's from now on.
            protocol = H2Connection(self.context, settings)
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            return
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.context.protocols.connection_opened("h1")
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "unix"
        refusal = self.context.counter.admit(self.peer)
        if refusal is not None:
            self._refuse_connection(refusal)
            return
        self._admitted = True
        self.context.connections.add(self)
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)  # type: ignore[attr-defined]
        self._idle_since = self.loop.time()
        self._arm(self._idle_since + self.limits.header_timeout)

    def _refuse_connection(self, status: int) -> None:
        assert self.transport is not None
        what = "connections" if status == 503 else f"connections from {self.peer}"
        log.warning("refused a connection from %s: too many open %s", self.peer, what)
        self._closing = True
        writer = self.transport
        writer.write(closing_response(status, f"too many open {what}", {"Retry-After": "5"}))
        # Half-close and drain briefly: closing on unread input would reset the connection and
        # could destroy the answer before the client reads it.
        if writer.can_write_eof():
            writer.write_eof()
            self.loop.call_later(REFUSED_LINGER, writer.abort)
        else:
            writer.close()

    def _arm(self, at: float) -> None:
        """Make the deadline timer fire at ``at`` or sooner (a later deadline is found then)."""
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(at, self._tick)
        self._timer_at = at

    def _tick(self) -> None:
        """The head and keep-alive deadlines. While a request is answered neither applies;
        ``finished`` arms the timer again."""
        self._timer = None
        if self._closing or self.transport is None or self.exchange is not None or self._queue:
            return
        now = self.loop.time()
        limits = self.limits
        if self._in_head:
            deadline = self._head_began + limits.header_timeout
            if now >= deadline:
                limit = limits.header_timeout
                log.info("408 for %s: no whole request head within %gs", self.peer, limit)
                self.transport.write(
                    closing_response(408, f"request head not received within {limit:g}s")
                )
                self.close()
                return
        else:
            idle = limits.keepalive_timeout if self._served else limits.header_timeout
            deadline = self._idle_since + idle
            if now >= deadline:
                self.close()  # an idle connection, or a silent one: closed quietly
                return
        self._arm(deadline)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._tunnel is not None:
            self._tunnel(data)
            return
        if self._body_timer is not None:
            self._body_seen = self.loop.time()
        if self._bypass:
            self._pass_body(data)
            return
        if self._in_head:
            # httptools gathers a field before handing it over: bound what a head may pile up.
            self._head_bytes += len(data)
            if self._head_bytes > self.context.max_head_bytes:
                self._parse_failed(_Refusal(431, "request head too large"))
                return
        elif self._parsing is None and self._fast_request(data):
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade_parsed(data[upgrade.args[0] :])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refusal):
                self._parse_failed(cause)
            else:
                self._parse_failed(_Refusal(400, f"bad request: {cause or exc}"))
        except httptools.HttpParserError as exc:
            self._parse_failed(_Refusal(400, f"bad request: {exc}"))
        else:
            # The rest of a body of known length skips llhttp (one copy less per chunk).
            self._bypass = self._body_left > 0 and self._parsing is not None
            if self._in_head and not self._head_began:
                # A head that did not come whole: it has header_timeout from its first byte
                # (from the connection's opening for the first request).
                self._head_began = self.loop.time() if self._served else self._idle_since
                self._served = True
                self._arm(self._head_began + self.limits.header_timeout)

    def _fast_request(self, data: bytes) -> bool:
        """A plain request (proxy.dataplane.plain) read in one pass; False leaves it to llhttp."""
        limits = self.limits
        # A head within one field's size limit has no field over it.
        max_head = min(limits.max_header_size, self.context.max_head_bytes)
        plain = plain_request(data, max_head, limits.max_url_length, limits.max_header_count)
        if plain is None:
            return False
        head, end = plain
        self._served = True
        try:
            self._head_parsed(head)
        except _Refusal as refusal:
            self._parse_failed(refusal)
            return True
        rest = data[end:]
        if rest and not self._closing:
            self.data_received(rest)  # a pipelined request behind this one
        return True

    def _pass_body(self, data: bytes) -> None:
        left = self._body_left
        body = data if len(data) <= left else data[:left]
        self._body_left = left - len(body)
        self.on_body(body)
        if self._body_left:
            return
        self._bypass = False
        self._parser = httptools.HttpRequestParser(self)  # this one still waits for the body
        self.on_message_complete()
        if len(data) > len(body) and not self._closing:
            self.data_received(data[len(body) :])  # a pipelined request behind the body

    # ----------------------------------------------------------------------- llhttp callbacks

    def on_message_begin(self) -> None:
        self._url.clear()
        self._headers = []
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_url_length:
            raise _Refusal(414, f"request target longer than {self.limits.max_url_length} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self.limits
        if len(name) + len(value) > limits.max_header_size:
            raise _Refusal(431, f"header field larger than {limits.max_header_size} bytes")
        self._headers.append((name, value))
        if len(self._headers) > limits.max_header_count:
            raise _Refusal(431, f"more than {limits.max_header_count} header fields")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._head_began = 0.0
        self._served = True
        parser = self._parser
        head = RequestHead(
            method=parser.get_method().decode("ascii"),
            target=self._url.decode("latin-1"),
            version=parser.get_http_version(),
            raw_headers=self._headers,
            keep_alive=parser.should_keep_alive(),
        )
        self._url = bytearray()
        self._head_parsed(head)

    def _head_parsed(self, head: RequestHead) -> None:
        """Screen a whole head, then answer it now or queue it behind the one in flight."""
        try:
            screen_request(head, self.limits.max_url_length)
        except Rejected as rejected:
            raise _Refusal(rejected.status, rejected.reason) from None
        item = _Queued(head)
        if head.has_body:
            self._parsing = item
            self._body_left = 0 if head.chunked else head.content_length or 0
        else:
            item.complete = True  # llhttp's on_message_complete, if it follows, finds nothing
            self._parsing = None
            self._body_left = 0
        if self._current is None:
            self._start(item)
        else:
            self._queue.append(item)
            self.pause_reading_for("pipeline")

    def on_body(self, body: bytes) -> None:
        if not body:
            return  # an empty piece from llhttp is no chunk (and must not end a chunked body)
        if not self._bypass:
            self._body_left -= len(body)
        item = self._parsing
        if item is None:
            return
        if item is self._current and self.exchange is not None:
            self.exchange.body_received(body)
        else:
            item.body.append(body)

    def on_message_complete(self) -> None:
        item = self._parsing
        self._parsing = None
        if item is None:
            return
        item.complete = True
        if item is self._current:
            self._stop_body_timer()
            if self.exchange is not None:
                self.exchange.body_complete()

    def _upgrade_parsed(self, tail: bytes) -> None:
        """llhttp stops at an upgrade: the tail is WebSocket bytes, or the next request."""
        item = self._current if self._current is not None else None
        head = item.head if item is not None else None
        if head is not None and is_websocket_upgrade(head):
            self._tail = tail
            return
        # Any other protocol (h2c) is served as HTTP/1.1: parse on with a fresh parser.
        self._parser = httptools.HttpRequestParser(self)
        if tail:
            self.data_received(tail)

    def _parse_failed(self, refusal: _Refusal) -> None:
        current = self._current
        if current is not None and current is self._parsing and not current.complete:
            # The body of the request in flight is broken (a bad chunk): cut it short.
            self._parsing = None
            self.refuse_in_flight(refusal.status, refusal.reason)
            return
        self._parsing = None
        self.pause_reading_for("refused")
        if current is None:
            self._answer_refusal(refusal)
        else:
            self._queue.append(_Queued(None, refusal, complete=True))

    def _answer_refusal(self, refusal: _Refusal) -> None:
        log.info("%d for %s: %s", refusal.status, self.peer, refusal.reason)
        if self.transport is not None:
            self.transport.write(
                closing_response(refusal.status, refusal.reason.splitlines()[0][:300])
            )
        self.close()

    # ---------------------------------------------------------------------- the request cycle

    def _start(self, item: _Queued) -> None:
        if item.refusal is not None:
            self._answer_refusal(item.refusal)
            return
        assert item.head is not None
        self._current = item
        self.response_started = False
        self.keep_alive = item.head.keep_alive and not self.context.draining
        self.request_started = time.perf_counter()
        if not item.complete:
            self._body_seen = self.loop.time()
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_check)
        self.context.protocols.request_started("h1")
        self.exchange = self.context.handler.start(self, item.head)
        for chunk in item.body:
            self.exchange.body_received(chunk)
        item.body.clear()
        if item.complete:
            self.exchange.body_complete()

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
        return HttpExchange(
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
        return WebSocketExchange(self, head, router, traffic, facts, wait=wait, hsts=hsts)

    @property
    def body_complete(self) -> bool:
        return self._current is not None and self._current.complete

    def finished(self, status: int, sent: int, received: int) -> None:
        """The exchange has written its whole response."""
        item, self._current, self.exchange = self._current, None, None
        self._stop_body_timer()
        if self.context.access_log and item is not None and item.head is not None:
            self._log_access(item.head, status, sent)
        if item is not None and not item.complete:
            self.keep_alive = False  # the rest of an unread body cannot be told from a request
        if not self.keep_alive or self.context.draining:
            self.close()
            return
        if self._queue:
            self._start(self._queue.popleft())
            if not self._queue:
                self.resume_reading_for("pipeline")
            return
        self._idle_since = now = self.loop.time()
        self._arm(now + self.limits.keepalive_timeout)

    def _log_access(self, head: RequestHead, status: int, sent: int) -> None:
        seconds = time.perf_counter() - self.request_started
        agent = head.first(b"user-agent") or "-"
        access_log.info(
            '%s "%s %s HTTP/%s" %d %d %fs "%s"',
            self.peer, head.method, head.target, head.version, status, sent, seconds, agent,
        )  # fmt: skip

    # ------------------------------------------------------------------------ the body

    def _body_check(self) -> None:
        self._body_timer = None
        if self._current is None or self._current.complete or self._closing:
            return
        now = self.loop.time()
        if self._paused_for:
            self._body_seen = now  # the proxy's side is slow, not the client
        timeout = self.limits.body_timeout
        if now - self._body_seen >= timeout:
            log.info("408 for %s: request body stalled for %gs", self.peer, timeout)
            self.refuse_in_flight(408, f"request body stalled for {timeout:g}s")
            return
        self._body_timer = self.loop.call_at(self._body_seen + timeout, self._body_check)

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def refuse_in_flight(self, status: int, reason: str) -> None:
        """Answer if nothing was sent yet, drop the exchange (and its backend request), close."""
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.client_lost()
        if self.transport is not None and not self.response_started:
            self.transport.write(closing_response(status, reason.splitlines()[0][:200]))
        self.close()

    # ------------------------------------------------------------------------ writing

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.response_started = True
            self.transport.write(data)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_expired)
        if self.exchange is not None:
            self.exchange.client_writable(False)

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self.exchange is not None:
            self.exchange.client_writable(True)

    def _send_expired(self) -> None:
        self._send_timer = None
        if self.transport is not None and self.writing_paused:
            limit = self.limits.send_timeout
            log.info("cut off %s: it left a response unread for %gs", self.peer, limit)
            self.abort()

    # ------------------------------------------------------------------------ flow control

    def pause_reading_for(self, reason: str) -> None:
        """Stop reading the browser for ``reason`` (a queue behind, a full backend, a buffer);
        reading resumes when no reason is left."""
        if not self._paused_for and self.transport is not None and not self._closing:
            self.transport.pause_reading()
        self._paused_for.add(reason)

    def resume_reading_for(self, reason: str) -> None:
        if reason not in self._paused_for:
            return
        self._paused_for.discard(reason)
        if not self._paused_for and self.transport is not None and not self._closing:
            self.transport.resume_reading()

    # ------------------------------------------------------------------------ the tunnel

    def become_tunnel(self, to_backend: Callable[[bytes], None]) -> bytes:
        """After a 101: every byte from now on goes to ``to_backend``. Returns the bytes that
        followed the upgrade request in the same read (the browser's first frames)."""
        self._tunnel = to_backend
        self._stop_body_timer()
        self._paused_for.clear()
        tail, self._tail = self._tail, b""
        return tail

    # ------------------------------------------------------------------------ the end

    def drain(self) -> None:
        """Shutdown: an idle connection closes now, a busy one after its response."""
        if self.exchange is None and self._tunnel is None:
            self.close()

    def close(self) -> None:
        self._closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._admitted:
            self._admitted = False
            self.context.counter.release(self.peer)
        self.context.connections.discard(self)
        for timer in (self._timer, self._body_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._body_timer = self._send_timer = None
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.client_lost()
        if self._tunnel is not None:
            tunnel, self._tunnel = self._tunnel, None
            tunnel(b"")
        self._queue.clear()
