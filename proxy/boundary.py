"""The one place where errors become HTTP responses.

Handlers of the aiohttp apps raise ``HTTPProblem`` subclasses (proxy.errors); this middleware
answers them with their status and a one-line reason; the data plane writes the same answer for
forwarded requests (proxy.dataplane.exchange.problem_bytes). A 503 carries Retry-After. Anything
else is a bug: it is logged with its traceback and answered 500, and the proxy keeps serving
everyone else.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from .errors import HTTPProblem, NoBackendAvailable

__all__ = ["error_boundary", "problem_response"]

log = logging.getLogger("dumont.boundary")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem_response(problem: HTTPProblem) -> web.Response:
    response = web.json_response(
        {"error": problem.reason, "detail": problem.detail}, status=problem.status
    )
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    if isinstance(problem, NoBackendAvailable):
        response.headers[hdrs.RETRY_AFTER] = str(problem.retry_after)
    return response


@web.middleware
async def error_boundary(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HTTPProblem as problem:
        if problem.status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.path, problem.status, problem)
        return problem_response(problem)
    except web.HTTPException:
        raise
    except ConnectionResetError as exc:
        # The browser went away mid-response (a navigation aborts what the page was loading).
        # Nothing can reach it; aiohttp drops a response to a closed connection quietly.
        log.debug("%s %s: client connection lost: %s", request.method, request.path, exc)
        return web.Response(status=499, reason="Client Closed Request")
    except Exception:
        log.exception("unhandled error for %s %s", request.method, request.path)
        return problem_response(HTTPProblem("unexpected error; see the proxy log"))
