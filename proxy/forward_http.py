"""HTTP/1.1 forwarding: stream the request to the active backend and its response back.

Bodies stream both ways in bounded chunks (a 2 GiB upload or download keeps memory flat). An
idempotent request without a body is safe to send twice, so when its backend dies before answering
(refused, reset, or switched away while it waited for headers) it is re-sent to whichever backend
serves next; anything else gets a 502.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict

from .backends import Backend, PendingRequest
from .errors import UpstreamError, UpstreamTimeout
from .headers import ClientFacts, request_headers, response_headers
from .pages import MAX_DOCUMENT_BYTES, inject_watcher, wants_watcher
from .validation import refuse_bad_response
from .workspace import Workspace

__all__ = ["IDEMPOTENT", "SERVED_BY", "forward_http"]

# Request storage key: the name ("gpu"/"cpu") of the backend that answered.
SERVED_BY = web.RequestKey("served_by", str)

IDEMPOTENT = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS})
# Responses up to this size are read whole and sent in one write: fewer syscalls and awaits.
SMALL_BODY = 64 * 1024
MAX_ATTEMPTS = 3
# Connection-level failures: the request never got an answer from the backend.
PASSIVE_FAILURES = (
    aiohttp.ClientConnectorError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
    aiohttp.ConnectionTimeoutError,
)
NO_BODY_STATUSES = frozenset({204, 304})


class _Rerouted(Exception):
    """The backend was switched away while this request waited for its headers."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connect failed: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connect timed out"
    return f"{type(exc).__name__}: {exc}"


async def _send(
    backend: Backend,
    request: web.Request,
    headers: CIMultiDict[str],
    replayable: bool,
) -> aiohttp.ClientResponse:
    pending: PendingRequest | None = None
    task = asyncio.current_task()
    if replayable and task is not None:
        pending = PendingRequest(task)
        backend.waiting.add(pending)
    try:
        return await backend.session.request(
            request.method,
            backend.target(request.raw_path),
            headers=headers,
            data=request.content if request.body_exists else None,
            allow_redirects=False,
            compress=None,
        )
    except asyncio.CancelledError:
        if pending is not None and pending.rerouted and task is not None:
            task.uncancel()
            raise _Rerouted from None
        raise
    finally:
        if pending is not None:
            backend.waiting.discard(pending)


async def _open_upstream(
    request: web.Request, workspace: Workspace, client: ClientFacts, wait: float
) -> aiohttp.ClientResponse:
    replayable = request.method in IDEMPOTENT and not request.body_exists
    headers = request_headers(request.headers, client)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        backend = await workspace.acquire(wait)
        try:
            upstream = await _send(backend, request, headers, replayable)
            request[SERVED_BY] = backend.name
            return upstream
        except _Rerouted:
            continue
        except PASSIVE_FAILURES as exc:
            detail = _describe(exc)
            workspace.report_passive_failure(backend, detail)
            if not replayable or attempt == MAX_ATTEMPTS:
                if isinstance(exc, aiohttp.ConnectionTimeoutError):
                    raise UpstreamTimeout(f"{backend.name}: {detail}") from exc
                raise UpstreamError(f"{backend.name}: {detail}") from exc
            # A stale keep-alive connection also lands here: wait for the out-of-band probe's
            # verdict (or the switch) rather than for a whole interval.
            await workspace.wait_for_verdict(backend, wait)
        except aiohttp.ClientConnectionError as exc:
            # Not the backend's fault: its pool was closed under us (the role was pointed at a
            # new machine). Safe to send again if nothing was sent.
            if not replayable or attempt == MAX_ATTEMPTS:
                raise UpstreamError(f"{backend.name}: {exc}") from exc
        except aiohttp.ClientResponseError as exc:
            message = exc.message[:200]  # a garbage status line can be megabytes long
            raise UpstreamError(f"{backend.name}: invalid response: {message}") from exc
    raise UpstreamError("no backend answered")  # pragma: no cover - the loop always returns


async def forward_http(
    request: web.Request, workspace: Workspace, client: ClientFacts, wait: float
) -> web.StreamResponse:
    """Forward to the active backend, waiting up to ``wait`` seconds for one (a switch)."""
    upstream = await _open_upstream(request, workspace, client, wait)
    try:
        refuse_bad_response(upstream)  # issue 7: responses get the requests' scrutiny
        headers = response_headers(upstream.headers)
        if workspace.config.pages.watcher and wants_watcher(
            upstream.status, request.method, headers
        ):
            return await _relay_document(request, upstream, headers, workspace.machine.epoch)
        return await _relay_response(request, upstream, headers)
    finally:
        upstream.release()


async def _read_capped(upstream: aiohttp.ClientResponse, cap: int) -> tuple[bytes, bool]:
    """Up to a little more than ``cap`` bytes of the body, and whether that was all of it."""
    chunks: list[bytes] = []
    size = 0
    while size <= cap:
        chunk = await upstream.content.readany()
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


async def _relay_document(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    headers: CIMultiDict[str],
    epoch: int,
) -> web.StreamResponse:
    """An HTML document: buffered (it is small) so the watcher's script tag can go in (issue 3)."""
    try:
        body, complete = await _read_capped(upstream, MAX_DOCUMENT_BYTES)
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamError(f"backend body cut short: {exc}") from exc
    if not complete:  # larger than any workbench page: pass it through untouched
        return await _relay_response(request, upstream, headers, head=body)
    injected = inject_watcher(upstream.status, request.method, headers, body, served_epoch=epoch)
    if injected is not None:
        headers, body = injected
        headers.popall(hdrs.CONTENT_LENGTH, None)  # aiohttp sets it from the new body
    return web.Response(status=upstream.status, reason=upstream.reason, headers=headers, body=body)


async def _relay_response(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    headers: CIMultiDict[str],
    head: bytes = b"",
) -> web.StreamResponse:
    """Stream the response; ``head`` is body already read from the backend."""
    status = upstream.status
    length = upstream.content_length
    if request.method == hdrs.METH_HEAD or status in NO_BODY_STATUSES or status < 200:
        bodiless = web.Response(status=status, reason=upstream.reason, headers=headers)
        if length is not None and request.method == hdrs.METH_HEAD:
            bodiless.headers[hdrs.CONTENT_LENGTH] = str(length)
        return bodiless
    if length is not None and length <= SMALL_BODY and not head:
        try:
            body = await upstream.read()
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamError(f"backend body cut short: {exc}") from exc
        return web.Response(status=status, reason=upstream.reason, headers=headers, body=body)
    response = web.StreamResponse(status=status, reason=upstream.reason, headers=headers)
    if length is not None:
        response.content_length = length
    await response.prepare(request)
    try:
        if head:
            await response.write(head)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
    except aiohttp.ClientPayloadError:
        # Headers are gone already: the only honest signal left is to cut the connection.
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response
