"""One HTTP request's way through the proxy: a backend, the request out, the response back.

Driven by callbacks on both connections (no task per request): the client connection hands over
body bytes, the upstream connection hands back the response. A task is started only when the
request must wait: for a backend during a switch, for a new upstream connection, or for the health
verdict after a passive failure.

Bodies stream both ways with backpressure: while the backend's send buffer is full the browser's
connection is not read, and while the browser's is full the backend's is not read. Every body is
re-framed: Content-Length when the backend gave one, else chunked (or, for an HTTP/1.0 client, the
connection's end). An idempotent request without a body is safe to send twice, so when its backend
dies before answering (refused, reset, or switched away while it waited for headers) it is re-sent
to whichever backend serves next; anything else gets a 502 (504 when the connect timed out).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict

from proxy.boundary import problem_answer
from proxy.errors import HTTPProblem, NoBackendAvailable, UpstreamError, UpstreamTimeout
from proxy.headers import ClientFacts, response_headers
from proxy.pages import MAX_DOCUMENT_BYTES, inject_watcher, is_navigation_of, wants_watcher
from proxy.validation import screen_response_head

from .messages import (
    RequestHead,
    backend_request_head,
    browser_response_head,
    serialize_head,
)
from .plain import NO_BODY_STATUSES
from .upstream import (
    BadResponse,
    ConnectFailed,
    ResponseHead,
    UpstreamClosed,
    UpstreamConnection,
    UpstreamFailure,
    UpstreamPool,
)

if TYPE_CHECKING:
    from proxy.backends import Backend
    from proxy.observe import TrafficObserver

    from .client import ClientSide
    from .router import Router

__all__ = ["IDEMPOTENT", "TRANSITION_HEADER", "HttpExchange", "problem_bytes"]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_ATTEMPTS = 3
# Request body bytes held while no backend connection is ready; past it the client is not read.
BODY_BUFFER_LIMIT = 256 * 1024
# Asks the pages app for the transition page; a browser can never send it (see strip_internal).
TRANSITION_HEADER = "X-Dumont-Transition"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def problem_bytes(problem: HTTPProblem, keep_alive: bool, extra: dict[str, str]) -> bytes:
    """The boundary's answer (proxy.boundary.problem_answer) as a whole HTTP/1.1 response."""
    fields, body = problem_answer(problem)
    headers = CIMultiDict({**fields, "Content-Length": str(len(body)), **extra})
    if not keep_alive:
        headers["Connection"] = "close"
    phrase = HTTPStatus(problem.status).phrase  # HTTPProblem statuses are all standard ones
    return serialize_head(f"HTTP/1.1 {problem.status} {phrase}", headers) + body


def _html(fields: dict[bytes, list[bytes]]) -> bool:
    """Whether a response says it is HTML (only then is it worth reading its headers whole)."""
    values = fields.get(b"content-type")
    return values is not None and b"html" in b"\n".join(values).lower()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where an exchange goes: a backend chosen by the router (and counted by ``traffic``), or a
    fixed local app's pool."""

    router: Router | None
    local: UpstreamPool | None
    wait: float = 0.0
    traffic: TrafficObserver | None = None


def is_navigation_head(head: RequestHead) -> bool:
    """proxy.pages.is_navigation for a request the data plane holds."""
    return is_navigation_of(
        head.method,
        head.first(b"sec-fetch-mode"),
        head.first(b"accept") or "",
        b"upgrade" in head.fields,
    )


class HttpExchange:
    # What every exchange starts with, as class attributes: an instance stores only what it
    # changes (this runs once per request).
    extra_out: tuple[bytes, ...] = ()  # the pages app's X-Dumont-Transition
    backend: Backend | None = None
    upstream: UpstreamConnection | None = None
    attempt = 0
    body_size = 0
    body_done = False
    bytes_up = 0
    bytes_down = 0
    status = 0
    answered: ResponseHead | None = None
    pending_head = b""
    chunked_out = False
    document: bytearray | None = None
    document_headers: CIMultiDict[str] | None = None
    gone = False
    done = False
    served_by: str | None = None
    _task: asyncio.Task[None] | None = None

    def __init__(
        self,
        conn: ClientSide,
        head: RequestHead,
        destination: Destination,
        client: ClientFacts,
        *,
        pages: UpstreamPool,
        watcher: bool,
        hsts: str | None,
        extra_out: tuple[bytes, ...] = (),
    ) -> None:
        if extra_out:
            self.extra_out = extra_out  # the gate's refusal header (proxy.dataplane.handlers)
        self.conn = conn
        self.head = head
        self.destination = destination
        self.traffic = destination.traffic  # kept for when a page answers instead
        self.pages = pages
        self.watcher = watcher
        self.hsts = hsts
        self.method = head.method
        has_body = head.has_body
        self.replayable = not has_body and head.method in IDEMPOTENT
        self.client = client
        # The proxy answers "Expect: 100-continue" itself, once it is ready to read the body.
        self.expect_continue = has_body and b"expect" in head.fields
        self.body: list[bytes] = []
        self._dispatch()

    # ---------------------------------------------------------------------- choosing a backend

    def _dispatch(self) -> None:
        self.attempt += 1
        destination = self.destination
        if destination.router is None:
            assert destination.local is not None
            conn = destination.local.take_idle()
            if conn is not None:
                self._attach(None, conn)
                return
        else:
            backend = destination.router.ready_backend()
            if backend is not None and (conn := backend.pool.take_idle()) is not None:
                self._attach(backend, conn)
                return
        self._spawn(self._dispatch_slowly(), "dispatch")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._task = self.conn.context.tasks.spawn(coro, name=name)

    async def _dispatch_slowly(self) -> None:
        destination = self.destination
        backend: Backend | None = None
        try:
            if destination.router is not None:
                backend = await destination.router.acquire(destination.wait)
                pool = backend.pool
            else:
                assert destination.local is not None
                pool = destination.local
            conn = pool.take_idle() or await pool.connect()
        except NoBackendAvailable as problem:
            self._problem(problem)
            return
        except UpstreamFailure as failure:
            self._failed(backend, failure, None)
            return
        finally:
            self._task = None
        if self.gone:
            conn.close()
            return
        self._attach(backend, conn)

    def _attach(self, backend: Backend | None, conn: UpstreamConnection) -> None:
        self.backend = backend
        self.upstream = conn
        if backend is not None and self.replayable:
            backend.waiting.add(self)
        prefix = backend.path_prefix if backend is not None else ""
        first = f"{self.method} {prefix}{self.head.target} HTTP/1.1"
        data = backend_request_head(self.head, first, self.client, self.extra_out)
        if self.body:
            data = b"".join([data, *self.body])
            self.body.clear()
        elif self.expect_continue and not self.body_done:
            self._send_continue()
        if self.body_size:
            self.body_size = 0
            self.conn.resume_reading_for("buffer")
        conn.send(self, data, head_request=self.method == "HEAD")

    # -------------------------------------------------------------------- the request's body

    def body_received(self, data: bytes) -> None:
        self.bytes_up += len(data)
        framed = _chunk(data) if self.head.chunked else data
        if self.upstream is not None:
            self.upstream.write(framed)
            return
        self.body.append(framed)
        self.body_size += len(framed)
        if self.body_size > BODY_BUFFER_LIMIT:
            self.conn.pause_reading_for("buffer")

    def body_complete(self) -> None:
        self.body_done = True
        if self.head.chunked:
            if self.upstream is not None:
                self.upstream.write(LAST_CHUNK)
            else:
                self.body.append(LAST_CHUNK)

    def upstream_writable(self, writable: bool) -> None:
        if writable:
            self.conn.resume_reading_for("upstream")
        else:
            self.conn.pause_reading_for("upstream")

    # ------------------------------------------------------------------------ the response

    def head_received(self, head: ResponseHead) -> None:
        if self.backend is not None:
            self.backend.waiting.discard(self)
            fields = head.fields
            problem = screen_response_head(
                head.status,
                head.reason,
                fields.get(b"content-length", []),
                fields.get(b"transfer-encoding", []),
            )
            if problem is not None:
                # Never reuse a connection whose framing is in doubt.
                self._detach_upstream()
                name = self.backend.name
                self._problem(
                    UpstreamError(
                        f"{name}: backend sent a response the proxy will not relay: {problem}"
                    )
                )
                return
        self.answered = head
        self.status = head.status
        if self.backend is not None:
            self.served_by = self.backend.name
            assert self.destination.router is not None  # a backend comes only from a router
            self.destination.router.note_served(self.backend, head.status)
        if self.watcher and self.backend is not None and _html(head.fields):
            headers = response_headers(
                CIMultiDict((n.decode("latin-1"), v.decode("latin-1")) for n, v in head.headers)
            )
            if wants_watcher(head.status, self.method, headers):
                self.document = bytearray()
                self.document_headers = headers
                return
        self._hold_head(head)

    # ----------------------------------------------- the browser's wire format (HTTP/1.1 here)
    # The seam for another protocol to the browser: proxy.dataplane.h2_exchange overrides the
    # methods of this section and ``_prepare_head``, nothing else, so choosing a backend, retries,
    # screening, the watcher, the transition page and accounting are one code for both.

    def _send_continue(self) -> None:
        self.conn.write(CONTINUE)
        self.conn.response_started = False  # an interim answer; the real one is to come

    def _hold_head(self, head: ResponseHead) -> None:
        """Keep the browser's head until the first body byte or the end (a failure before then
        can still be retried or answered with an error)."""
        extra = self._framing(head.content_length)
        if self.hsts is not None and b"strict-transport-security" not in head.fields:
            extra.append(b"Strict-Transport-Security: " + self.hsts.encode())
        self.pending_head = browser_response_head(
            head.status_line, head.headers, extra, head.named, head.names
        )

    def _send_body(self, data: bytes) -> None:
        framed = _chunk(data) if self.chunked_out else data
        if self.pending_head:
            framed = self.pending_head + framed
            self.pending_head = b""
        self.conn.write(framed)

    def _send_end(self) -> None:
        if self.pending_head:
            self.conn.write(self.pending_head)
            self.pending_head = b""
        if self.chunked_out:
            self.conn.write(LAST_CHUNK)

    def _drop_held(self) -> None:
        """Nothing reached the browser yet: forget the held head before a retry or an error."""
        self.pending_head = b""
        self.chunked_out = False

    def _send_problem(self, problem: HTTPProblem) -> None:
        extra = {"Strict-Transport-Security": self.hsts} if self.hsts else {}
        self.conn.write(problem_bytes(problem, self.conn.keep_alive, extra))

    def _framing(self, length: int | None) -> list[bytes]:
        """How the body is framed for the browser, and whether the connection stays open."""
        assert self.answered is not None
        status = self.answered.status
        conn = self.conn
        lines = []
        if self.method == "HEAD" or status in NO_BODY_STATUSES:
            if length is not None and self.method == "HEAD":
                lines.append(b"Content-Length: %d" % length)
        elif length is not None:
            lines.append(b"Content-Length: %d" % length)
        elif self.head.version == "1.1":
            lines.append(b"Transfer-Encoding: chunked")
            self.chunked_out = True
        else:
            conn.keep_alive = False  # an HTTP/1.0 client reads to the end of the connection
        if not conn.keep_alive:
            lines.append(b"Connection: close")
        elif self.head.version == "1.0":
            lines.append(b"Connection: keep-alive")
        return lines

    def _prepare_head(self, headers: CIMultiDict[str], length: int | None) -> None:
        """A document's head (headers already filtered, the watcher perhaps added)."""
        assert self.answered is not None
        if self.hsts is not None:
            headers.setdefault("Strict-Transport-Security", self.hsts)
        first = f"HTTP/1.1 {self.answered.status} {self.answered.reason}"
        head = serialize_head(first, headers)[:-2]  # without the blank line
        self.pending_head = head + b"".join(x + b"\r\n" for x in self._framing(length)) + b"\r\n"

    def response_complete(self) -> None:
        if self.answered is None:
            # A 101 to a plain request, or a response that ended before its head.
            self._detach_upstream()
            self._problem(UpstreamError("backend ended the response before its head"))
            return
        if self.document is not None:
            self._send_document()
        self._send_end()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.pool.release(upstream)
        self._finish()

    def _send_document(self) -> None:
        """An HTML document, buffered whole (it is small) so the watcher's tag can go in."""
        assert self.document is not None
        assert self.document_headers is not None
        assert self.answered is not None
        assert self.destination.router is not None
        body, self.document = bytes(self.document), None
        headers = self.document_headers
        injected = inject_watcher(
            self.answered.status,
            self.method,
            headers,
            body,
            served_epoch=self.destination.router.epoch,
        )
        if injected is not None:
            headers, body = injected
            headers.popall("Content-Length", None)
        self._prepare_head(headers, len(body))
        self._send_body(body)
        self.bytes_down += len(body)

    def response_body(self, data: bytes) -> None:
        if self.document is not None:
            self.document += data
            if len(self.document) > MAX_DOCUMENT_BYTES:
                # Larger than any workbench page: pass it through untouched.
                assert self.document_headers is not None
                assert self.answered is not None
                self._prepare_head(self.document_headers, self.answered.content_length)
                data, self.document = bytes(self.document), None
            else:
                return
        self.bytes_down += len(data)
        self._send_body(data)

    def client_writable(self, writable: bool) -> None:
        if self.upstream is not None:
            self.upstream.reading(writable)

    # ------------------------------------------------------------------------ failures

    def upstream_failed(self, failure: UpstreamFailure) -> None:
        upstream, self.upstream = self.upstream, None
        if self.conn.response_started:
            # Headers are gone already: the only honest signal left is to cut the connection.
            self.conn.abort()
            self._finish()
            return
        # Nothing reached the browser yet (a head held back, a document being buffered).
        self._drop_held()
        self.bytes_down = 0
        self._failed(self.backend, failure, upstream)

    def _failed(
        self, backend: Backend | None, failure: UpstreamFailure, upstream: UpstreamConnection | None
    ) -> None:
        if backend is not None:
            backend.waiting.discard(self)
        self.answered = None
        self.document = None
        router = self.destination.router
        if isinstance(failure, BadResponse) or router is None or backend is None:
            name = backend.name if backend is not None else "pages"
            self._problem(UpstreamError(f"{name}: {failure.detail}"))
            return
        # A pool closed under us means the role was pointed at a new machine: not its fault.
        repointed = isinstance(failure, UpstreamClosed) and backend.pool.closed
        if not repointed:
            router.report_passive_failure(backend, failure.detail)
        if not self.replayable or self.attempt >= MAX_ATTEMPTS or self.gone:
            if isinstance(failure, ConnectFailed) and failure.timed_out:
                self._problem(UpstreamTimeout(f"{backend.name}: {failure.detail}"))
            else:
                self._problem(UpstreamError(f"{backend.name}: {failure.detail}"))
            return
        if repointed:
            self._dispatch()
            return
        # A stale keep-alive connection also lands here: wait for the out-of-band probe's
        # verdict (or the switch) rather than for a whole interval.
        self._spawn(self._retry_after_verdict(router, backend), "retry")

    async def _retry_after_verdict(self, router: Router, backend: Backend) -> None:
        try:
            await router.wait_for_verdict(backend, self.destination.wait)
        finally:
            self._task = None
        if not self.gone:
            self._dispatch()

    def reroute(self) -> bool:
        """The backend was switched away while this request waited for its headers: send it to
        whichever serves now (it is idempotent and bodiless, so that is safe)."""
        if self.answered is not None or self.gone or self.upstream is None:
            return False
        if self.backend is not None:
            self.backend.waiting.discard(self)
        self._detach_upstream()
        self._dispatch()
        return True

    def _problem(self, problem: HTTPProblem) -> None:
        if self.gone:
            return
        if (
            isinstance(problem, NoBackendAvailable)
            and self.destination.router is not None
            and is_navigation_head(self.head)
        ):
            # A page load with no backend ready gets the transition page from the pages app.
            self.status = 503
            self.destination = Destination(None, self.pages)
            self.extra_out = (b"%s: %d" % (TRANSITION_HEADER.encode(), problem.retry_after),)
            self.backend = None
            self._dispatch()
            return
        self.status = problem.status
        self._send_problem(problem)
        self._finish()

    def _detach_upstream(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.detach()

    # ------------------------------------------------------------------------ the end

    def client_lost(self) -> None:
        """The browser went away (or its body stalled): drop the backend request, quietly; the
        backend did nothing wrong."""
        self.gone = True
        if self.backend is not None:
            self.backend.waiting.discard(self)
        self._detach_upstream()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._account()

    def _finish(self) -> None:
        if self.done:
            return
        self._account()
        if not self.gone:
            self.conn.finished(self.status, self.bytes_down, self.bytes_up)

    def _account(self) -> None:
        if self.done:
            return
        self.done = True
        if self.traffic is not None:
            seconds = time.perf_counter() - self.conn.request_started
            self.traffic.request_done(
                self.served_by,
                self.method,
                self.status or 499,
                seconds,
                self.bytes_up,
                self.bytes_down,
            )
