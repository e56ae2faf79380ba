"""The upstream side: HTTP/1.1 connections to one backend, parsed by llhttp, kept alive in a pool.

An ``UpstreamConnection`` carries one exchange (or health probe) at a time. Whoever sends a
request on it gives a ``ResponseSink``; the connection calls it with the response head, each body
chunk, the end, or the failure. After a complete response with keep-alive and nothing unasked-for
behind it, the connection goes back to its ``UpstreamPool``; anything in doubt (extra bytes, a
parse error, a cut) closes it, so framing trouble can never answer the next request.

Why idle connections live only ``KEEPALIVE_SECONDS``: code-server is Node, whose server closes an
idle keep-alive connection after 5 s. Reusing one it is closing resets the request, which counts as
a passive failure toward fall (the continuity run saw a false failover from exactly that).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import httptools

from .messages import RESPONSE_FIELDS, ResponseHead, connection_tokens, read_fields
from .plain import plain_response

__all__ = [
    "KEEPALIVE_SECONDS",
    "ConnectFailed",
    "ResponseHead",
    "ResponseSink",
    "UpstreamClosed",
    "UpstreamConnection",
    "UpstreamFailure",
    "UpstreamPool",
]

KEEPALIVE_SECONDS = 4.0
# Connections one pool opens at most; past it a request waits for one to come free. An HTTP/1.1
# browser connection carries one request at a time, so it never came near this; an HTTP/2 one
# carries up to http2.max_concurrent_streams (issue 19), and 100 of them opened 10,000 backend
# connections in bench/h2load.py, past what the origin accepted (code-server is one Node process).
MAX_CONNECTIONS = 1024
# A response head larger than this is refused (llhttp has no limit of its own).
MAX_RESPONSE_HEAD = 64 * 1024
MAX_RESPONSE_HEADERS = 200
# The kernel's socket buffer plus this much in the transport before the writer is told to wait
# (both sides of the data plane use these marks).
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024


class UpstreamFailure(Exception):
    """The backend connection failed; ``answered`` says whether any response byte had arrived."""

    def __init__(self, detail: str, answered: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.answered = answered


class ConnectFailed(UpstreamFailure):
    """No connection could be opened (refused, unreachable, timed out)."""

    def __init__(self, detail: str, timed_out: bool = False) -> None:
        super().__init__(detail)
        self.timed_out = timed_out


class UpstreamClosed(UpstreamFailure):
    """The backend closed or reset the connection before the response was complete."""


class BadResponse(UpstreamFailure):
    """The backend sent bytes that are not a valid HTTP/1.1 response."""


class ResponseSink(Protocol):
    def head_received(self, head: ResponseHead) -> None: ...

    def response_body(self, data: bytes) -> None: ...

    def response_complete(self) -> None: ...

    def upstream_failed(self, failure: UpstreamFailure) -> None: ...

    def upstream_writable(self, writable: bool) -> None:
        """The connection's send buffer crossed a water mark (request-body backpressure)."""


class UpstreamConnection(asyncio.Protocol):
    """One connection to a backend; llhttp parses what comes back."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.sink: ResponseSink | None = None
        self.idle_since = 0.0
        self.upgraded = False  # after a 101: raw bytes go to ``on_raw``
        self.on_raw: Callable[[bytes], None] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._fresh_parser = False
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._fed = False  # llhttp has seen bytes of this response (then it reads all of it)
        self._keep_alive = True
        self._head_done = False
        self._answered = False
        self._complete = False
        self._reusable = True
        self._skip_body = False  # a HEAD request: the response has no body whatever it says
        self._body_left = 0  # Content-Length bytes still to come
        self._bypass = False  # they come straight from the socket, not through llhttp
        self._interim = False
        self.upgrade_tail = b""

    # ----------------------------------------------------------------------- asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            if self.on_raw is not None:
                self.on_raw(data)
            return
        if self.sink is None or self._complete:
            # Bytes nobody asked for: a desynchronised backend. Never reuse this connection.
            self._reusable = False
            self.close()
            return
        self._answered = True
        if self._bypass:
            self._pass_body(data)
            return
        if not self._fed and self._fast_response(data):
            return
        self._fed = True
        if not self._head_done:
            self._head_size += len(data)  # llhttp has no bound of its own on a head's size
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.upgraded = True
            self.upgrade_tail = data[upgrade.args[0] :]
            self._finish()
        except httptools.HttpParserCallbackError as exc:
            self._fail(BadResponse(f"invalid response: {exc.__context__ or exc}", True))
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"invalid response: {str(exc)[:200]}", True))
        else:
            if not self._head_done and self._head_size > MAX_RESPONSE_HEAD:
                self._fail(BadResponse("response head too large", True))
                return
            # A body of known length: llhttp has nothing left to check in it, and handing it
            # over itself would copy every chunk once more. The rest goes straight through.
            self._bypass = self._body_left > 0 and not self._complete

    def _fast_response(self, data: bytes) -> bool:
        """A plain response (proxy.dataplane.plain) read in one pass, its body passed on; False
        leaves everything to llhttp."""
        plain = plain_response(data, MAX_RESPONSE_HEAD, MAX_RESPONSE_HEADERS)
        if plain is None:
            return False
        head, end, length = plain
        self._head_done = True
        self._keep_alive = head.keep_alive
        if self._skip_body:
            length = 0
        self._body_left = length
        sink = self.sink
        assert sink is not None
        sink.head_received(head)
        if self.sink is None:
            return True  # the exchange let go of this connection on seeing the head
        rest = data[end:]
        if length:
            self._bypass = True
            if rest:
                self._pass_body(rest)
        else:
            if rest:
                self._reusable = False  # bytes behind a response with no body
            self._finish()
        return True

    def _pass_body(self, data: bytes) -> None:
        left = self._body_left
        if len(data) > left:
            self._reusable = False  # bytes behind the body that nobody asked for
            data = data[:left]
        self._body_left = left - len(data)
        if self.sink is not None:
            self.sink.response_body(data)
        if not self._body_left and not self._complete:
            self._bypass = False
            # llhttp, if it read the head, still waits for the body it never saw.
            self._fresh_parser = self._fed
            self._finish()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        if self.upgraded:
            if self.on_raw is not None:
                self.on_raw(b"")
            return
        if self.sink is not None and not self._complete:
            if self._head_done and self._until_close():
                self._finish()  # a response framed by the connection's end is whole at its end
                return
            reason = f": {exc}" if exc else ""
            self._fail(UpstreamClosed(f"backend closed the connection{reason}", self._answered))

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_writable(False)

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_writable(True)

    # ----------------------------------------------------------------------- llhttp callbacks

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if len(self._headers) > MAX_RESPONSE_HEADERS:
            raise BadResponse("response head too large", True)

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True  # 100 Continue, 103 Early Hints: not the answer yet
            self._reason, self._headers, self._head_size = b"", [], 0
            return
        if self._head_size > MAX_RESPONSE_HEAD:  # more bytes came than a head may have
            size = sum(len(name) + len(value) + 4 for name, value in self._headers)
            if size > MAX_RESPONSE_HEAD:
                raise BadResponse("response head too large", True)
        self._head_done = True
        self._keep_alive = self._parser.should_keep_alive()
        names, fields = read_fields(self._headers, RESPONSE_FIELDS)
        connection = fields.get(b"connection")
        head = ResponseHead(
            status=status,
            reason=self._reason.decode("latin-1"),
            version=self._parser.get_http_version(),
            headers=self._headers,
            keep_alive=self._keep_alive,
            names=names,
            fields=fields,
            named=connection_tokens(connection) if connection is not None else frozenset(),
            status_line=b"HTTP/1.1 %d %s" % (status, self._reason),
        )
        length = head.content_length
        if length and not self._skip_body and status not in (204, 304):
            self._body_left = length
        assert self.sink is not None
        self.sink.head_received(head)
        if self._skip_body and self.sink is not None and not self._complete:
            self._fresh_parser = True  # llhttp would wait for a body the HEAD answer never has
            self._finish()

    def on_body(self, body: bytes) -> None:
        if not body:
            return  # llhttp hands over an empty piece at times; it is not a chunk of anything
        if self._complete:
            self._reusable = False  # a HEAD answer followed by a body
            return
        self._body_left -= len(body)
        if self.sink is not None:
            self.sink.response_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._parser.should_upgrade():
            return  # feed_data raises HttpParserUpgrade next, with the tail's offset
        if not self._complete:
            self._finish()

    # ----------------------------------------------------------------------------- sending

    def send(self, sink: ResponseSink, head: bytes, *, head_request: bool = False) -> None:
        """Start an exchange: ``head`` is the serialised request head (and any small body)."""
        assert self.transport is not None
        if self._fresh_parser:
            self._parser = httptools.HttpResponseParser(self)
            self._fresh_parser = False
        self.sink = sink
        self._reason, self._headers, self._head_size = b"", [], 0
        self._head_done = self._answered = self._complete = self._interim = self._fed = False
        self._skip_body = head_request
        self._body_left = 0
        self._bypass = False
        self.transport.write(head)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def reading(self, enabled: bool) -> None:
        """Backpressure from the other side's send buffer: resume or pause reading this one."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if enabled:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _until_close(self) -> bool:
        return not self._keep_alive

    def _finish(self) -> None:
        self._complete = True
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.response_complete()

    def _fail(self, failure: UpstreamFailure) -> None:
        self._reusable = False
        sink, self.sink = self.sink, None
        self.close()
        if sink is not None:
            sink.upstream_failed(failure)

    def detach(self) -> None:
        """The exchange gives up on this connection (rerouted, client gone): close it."""
        self.sink = None
        self._reusable = False
        self.close()

    @property
    def reusable(self) -> bool:
        return (
            self._reusable
            and self._complete
            and not self.upgraded
            and self.transport is not None
            and not self.transport.is_closing()
            and self._keep_alive
        )

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    """Keep-alive connections to one backend address; idle ones are reused newest first."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: bool,
        connect_timeout: float,
        unix_path: str | None = None,
        max_idle: int = 512,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.unix_path = unix_path
        self.max_idle = max_idle
        self._ssl = ssl.create_default_context() if tls else None
        self.max_connections = max_connections
        self._idle: list[UpstreamConnection] = []
        self._all: set[UpstreamConnection] = set()
        self._opening = 0
        # Requests waiting for a connection at the cap: given a released one, or None (a slot
        # came free: open one).
        self._waiters: deque[asyncio.Future[UpstreamConnection | None]] = deque()
        self.closed = False

    def take_idle(self) -> UpstreamConnection | None:
        """A kept-alive connection ready for a request, or None (then ``connect``)."""
        cutoff = time.monotonic() - KEEPALIVE_SECONDS
        while self._idle:
            conn = self._idle.pop()
            transport = conn.transport
            if conn.idle_since > cutoff and transport is not None and not transport.is_closing():
                return conn
            conn.close()
        return None

    async def connect(self) -> UpstreamConnection:
        if self.closed:
            raise UpstreamClosed("the backend's pool was closed (the role was re-pointed)")
        loop = asyncio.get_running_loop()
        while len(self._all) + self._opening >= self.max_connections:
            waiter: asyncio.Future[UpstreamConnection | None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                # Cancelled after being handed a connection or a slot: pass it on, not lose it.
                if waiter.done() and not waiter.cancelled():
                    given = waiter.result()
                    if given is not None:
                        self.release(given)
                    else:
                        self._wake(None)
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if handed is not None:
                return handed
            if self.closed:
                raise UpstreamClosed("the backend's pool was closed (the role was re-pointed)")
        self._opening += 1
        try:
            return await self._open(loop)
        finally:
            self._opening -= 1
            self._wake(None)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> UpstreamConnection:
        try:
            if self.unix_path is not None:
                opening = loop.create_unix_connection(
                    lambda: UpstreamConnection(self), self.unix_path
                )
            else:
                opening = loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port, ssl=self._ssl
                )
            _, conn = await asyncio.wait_for(opening, self.connect_timeout)
        except TimeoutError:
            raise ConnectFailed("connect timed out", timed_out=True) from None
        except OSError as exc:
            raise ConnectFailed(f"connect failed: {exc.strerror or exc}") from None
        if self._closed_meanwhile():
            conn.close()
            raise UpstreamClosed("the backend's pool was closed (the role was re-pointed)")
        self._all.add(conn)
        return conn

    def _closed_meanwhile(self) -> bool:
        return self.closed

    def release(self, conn: UpstreamConnection) -> None:
        """Back to the pool after a complete response, or closed if it cannot be trusted."""
        if self.closed or not conn.reusable:
            conn.close()
            return
        # The exchange may have paused reading (its browser was slow) as the last bytes came:
        # an idle connection must read, or the next response on it would never arrive.
        conn.reading(True)
        if self._waiters and self._wake(conn):
            return
        if len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        self._all.discard(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        if self._waiters:
            self._wake(None)  # a slot came free

    def _wake(self, conn: UpstreamConnection | None) -> bool:
        """Hand ``conn`` (or a free slot: None) to the first request still waiting."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def busy_count(self) -> int:
        """Connections carrying a request now."""
        return len(self._all) - len(self._idle)

    def stop_keeping(self) -> None:
        """Drain: idle connections close now, busy ones once their response is done (release
        closes them), and no new connection opens."""
        self.closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        while self._wake(None):
            pass  # whoever waited for a connection is told the pool is closed

    def close(self) -> None:
        """Close every connection, busy or idle; exchanges on them see a failure."""
        self.closed = True
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        while self._wake(None):
            pass
