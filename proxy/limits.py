"""Per-connection limits on the listeners: slow clients, oversized heads, too many connections.

aiohttp's server bounds header sizes and idle keep-alive, but has no deadline for a request
head, none for a stalled body and none for a client that stops reading (issue 7).
``GuardedRequestHandler`` is aiohttp's RequestHandler with four timers and a door:

- head: a request head must arrive whole within ``header_timeout`` of its first byte (of the
  connection's opening for the first request): else 408 and close;
- body: a request body may not stall for ``body_timeout`` while the proxy waits for it: else 408
  (or a cut connection once the response has begun), and the upstream request is cancelled;
- send: the client may not leave the proxy's send buffer full for ``send_timeout``: the
  connection is aborted, so a reader taking one byte a minute holds one buffer, briefly;
- keep-alive: aiohttp's own ``keepalive_timeout`` closes idle connections;
- the door: past ``max_connections`` (503) or ``max_connections_per_ip`` (429) a connection is
  answered and closed before anything is parsed.

Every request is screened (proxy.validation) before any handler sees it, including requests parsed
late from behind a declined WebSocket upgrade. A parse error answers 400, or 414/431 for a target
or a header over the limits. This leans on RequestHandler internals; tests/security pins them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from .config import LimitsConfig
from .validation import Rejected, screen_request

__all__ = ["ConnectionCounter", "GuardedAppRunner", "GuardedRequestHandler", "raw_response"]

log = logging.getLogger("dumont.limits")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}
# A refused connection is half-closed and given this long to read its answer before it is cut.
REFUSED_LINGER = 2.0


def raw_response(status: int, reason: str, extra: dict[str, str] | None = None) -> bytes:
    """A whole closing response, for moments when no aiohttp response can be made."""
    phrase = HTTPStatus(status).phrase
    body = f"{status} {phrase}: {reason}\n".encode()
    fields = {
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Length": str(len(body)),
        "Connection": "close",
        **SECURITY_HEADERS,
        **(extra or {}),
    }
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return f"HTTP/1.1 {status} {phrase}\r\n{head}\r\n".encode("latin-1") + body


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


class Guard:
    """What the handlers of one listener share: the limits and the connection counter."""

    def __init__(self, limits: LimitsConfig) -> None:
        self.limits = limits
        self.counter = ConnectionCounter(limits.max_connections, limits.max_connections_per_ip)
        # The parser reports an over-long target and an over-long field with the same exception;
        # its limit tells them apart, so the two limits must differ (screen_request checks the
        # exact target length).
        url = limits.max_url_length
        self.parser_url_limit = url + 1 if url == limits.max_header_size else url

    def handler_kwargs(self) -> dict[str, Any]:
        return {
            "keepalive_timeout": self.limits.keepalive_timeout,
            "max_line_size": self.parser_url_limit,
            "max_field_size": self.limits.max_header_size,
            "max_headers": self.limits.max_header_count,
        }

    def status_for(self, exc: BaseException) -> int:
        if isinstance(exc, LineTooLong):
            return 414 if exc.args[1] == self.parser_url_limit else 431
        if isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message:
            return 431
        return 400


def _response_started(request: BaseRequest | None) -> bool:
    if request is None:
        return True
    writer = request.writer
    return writer.output_size > 0 or bool(getattr(writer, "_headers_buf", None))


class GuardedRequestHandler(RequestHandler):
    def __init__(self, manager: Server, *, guard: Guard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._ip = ""
        self._admitted = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = False
        self._parsing_body: StreamReader | None = None
        self._body: StreamReader | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen = 0.0
        self._send_timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._verdict: Rejected | None = None
        self._app_handler = self._request_handler
        self._app_factory = self._request_factory
        self._request_handler = self._screened_handler
        self._request_factory = self._screening_factory

    # ------------------------------------------------------------------- the door and the head

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._ip = str(peer[0]) if peer else "unix"
        refusal = self._guard.counter.admit(self._ip)
        if refusal is not None:
            self._refuse_connection(transport, refusal)
            return
        self._admitted = True
        self._arm_head_timer()

    def _refuse_connection(self, transport: asyncio.BaseTransport, status: int) -> None:
        what = "connections" if status == 503 else f"connections from {self._ip}"
        log.warning("refused a connection from %s: too many open %s", self._ip, what)
        self._force_close = True  # aiohttp: parse nothing, start() returns at once
        writer = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        writer.write(raw_response(status, f"too many open {what}", {"Retry-After": "5"}))
        # Half-close and drain briefly: closing on unread input would reset the connection and
        # could destroy the answer before the client reads it.
        if writer.can_write_eof():
            writer.write_eof()
            self._linger = self._loop.call_later(REFUSED_LINGER, writer.abort)
        else:
            writer.close()

    def _arm_head_timer(self) -> None:
        self._head_timer = self._loop.call_later(
            self._guard.limits.header_timeout, self._head_expired
        )

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._force_close or self.transport is None:
            return
        if self._request_in_progress or self._messages:
            self._arm_head_timer()  # a pipelined head waits behind a request being handled
            return
        if self._head_bytes:
            limit = self._guard.limits.header_timeout
            log.info("408 for %s: no whole request head within %gs", self._ip, limit)
            self.transport.write(raw_response(408, f"request head not received within {limit:g}s"))
        self.force_close()

    def data_received(self, data: bytes) -> None:
        if self._force_close or self._close:
            return
        if self._body is not None:
            self._body_seen = self._loop.time()
        parsing_body = self._parsing_body is not None and not self._parsing_body.is_eof()
        if data and not parsing_body and not self._upgraded and self._payload_parser is None:
            self._head_bytes = True
            if self._head_timer is None:
                self._arm_head_timer()
        queued, count = len(self._messages), self._request_count
        super().data_received(data)
        if self._request_count == count:
            return
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_bytes = False
        new = list(self._messages)[queued:]
        last = new[-1][1] if new else None
        self._parsing_body = last if last is not None and last is not EMPTY_PAYLOAD else None
        errors = [m for m, _ in new if isinstance(m, _ErrInfo)]
        if errors and self._unfinished_body():
            # A broken chunk after the head was accepted: the request in flight is cut short.
            self._refuse_in_flight(400, errors[0].message)

    def _unfinished_body(self) -> bool:
        payloads = [p for _, p in self._messages] + ([self._body] if self._body else [])
        return any(p is not EMPTY_PAYLOAD and not p.is_eof() for p in payloads)

    # ------------------------------------------------------------------------ screening

    def _screening_factory(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: Any,
        task: asyncio.Task[None],
    ) -> BaseRequest:
        self._verdict = None
        if isinstance(message, RawRequestMessage) and message.method != "UNKNOWN":
            try:
                message = screen_request(message, self._guard.limits.max_url_length)
            except Rejected as rejected:
                self._verdict = rejected
                # Answer in HTTP/1.1 whatever the client spoke (an HTTP/0.9 line included).
                message = message._replace(version=HttpVersion11)
        assert self._app_factory is not None
        request = self._app_factory(message, payload, protocol, writer, task)
        if self._verdict is None and payload is not EMPTY_PAYLOAD and not payload.is_eof():
            self._watch_body(payload)
        return request

    async def _screened_handler(self, request: BaseRequest) -> web.StreamResponse:
        verdict, self._verdict = self._verdict, None
        if verdict is not None:
            return self._refusal(request, verdict.status, verdict.reason)
        handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]] | None
        handler = self._app_handler
        assert handler is not None
        return await handler(request)

    def _refusal(self, request: BaseRequest, status: int, reason: str) -> web.Response:
        log.info("%d for %s: %s", status, self._ip, reason)
        phrase = HTTPStatus(status).phrase
        response = web.Response(
            status=status, text=f"{status} {phrase}: {reason}\n", headers=SECURITY_HEADERS
        )
        response.force_close()
        return response

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or exc is None:
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:
            raise ConnectionError("a response is under way; cannot answer the parse error")
        return self._refusal(request, self._guard.status_for(exc), (message or str(exc))[:300])

    # ------------------------------------------------------------------------ the body

    def _watch_body(self, payload: StreamReader) -> None:
        self._body = payload
        self._body_seen = self._loop.time()
        if self._body_timer is None:
            self._body_timer = self._loop.call_later(
                self._guard.limits.body_timeout, self._body_check
            )

    def _body_check(self) -> None:
        self._body_timer = None
        body = self._body
        if body is None or body.is_eof() or self._current_request is None:
            self._body = None
            return
        now = self._loop.time()
        # Paused reading or unread bytes: the proxy's side is slow, not the client.
        if self._reading_paused or self._buffer_paused or body._size:
            self._body_seen = now
        timeout = self._guard.limits.body_timeout
        if now - self._body_seen >= timeout:
            log.info("408 for %s: request body stalled for %gs", self._ip, timeout)
            self._refuse_in_flight(408, f"request body stalled for {timeout:g}s")
            return
        self._body_timer = self._loop.call_at(self._body_seen + timeout, self._body_check)

    def _refuse_in_flight(self, status: int, reason: str) -> None:
        """Answer if nothing was sent yet, cancel the handler (and its upstream request), close."""
        if self.transport is not None and not _response_started(self._current_request):
            self.transport.write(raw_response(status, reason.splitlines()[0][:200]))
        self._body = None
        if self._task_handler is not None:
            self._task_handler.cancel()
        self.force_close()

    # ------------------------------------------------------------------------ the reader

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self._loop.call_later(
                self._guard.limits.send_timeout, self._send_expired
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_expired(self) -> None:
        self._send_timer = None
        if self.transport is not None and self.writing_paused:
            limit = self._guard.limits.send_timeout
            log.info("cut off %s: it left a response unread for %gs", self._ip, limit)
            self.transport.abort()

    # ------------------------------------------------------------------------ the end

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._admitted:
            self._admitted = False
            self._guard.counter.release(self._ip)
        for timer in (self._head_timer, self._body_timer, self._send_timer, self._linger):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._send_timer = self._linger = None
        body = self._body
        if body is not None and not body.is_eof() and self._task_handler is not None:
            # The client left mid-upload: cancel the handler rather than let the upstream
            # request fail with an OSError that would count against the backend's health.
            self._task_handler.cancel()
        self._body = None
        super().connection_lost(exc)


class GuardedServer(Server):
    """aiohttp's Server, making GuardedRequestHandlers."""

    def __init__(self, server: Server, guard: Guard) -> None:
        super().__init__(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, guard=self.guard, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose connections are guarded by ``limits``."""

    def __init__(self, app: web.Application, *, limits: LimitsConfig, **kwargs: Any) -> None:
        self.guard = Guard(limits)
        super().__init__(app, **self.guard.handler_kwargs(), **kwargs)

    async def _make_server(self) -> Server:
        return GuardedServer(await super()._make_server(), self.guard)
