"""The one place where errors become HTTP responses.

Handlers of the aiohttp apps raise ``HTTPProblem`` subclasses (proxy.errors); this middleware
answers them with their status and a one-line reason; the data plane writes the same answer for
forwarded requests (proxy.dataplane.exchange.problem_bytes). A 503 carries Retry-After. Anything
else is a bug: it is logged with its traceback and answered 500, and the proxy keeps serving
everyone else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .errors import HTTPProblem, NoBackendAvailable

__all__ = ["error_boundary", "problem_answer", "problem_response"]

log = logging.getLogger("dumont.boundary")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem_answer(problem: HTTPProblem) -> tuple[dict[str, str], bytes]:
    """The answer to a problem, whoever writes it (these apps, or the data plane for forwarded
    requests): its headers and its one-line JSON body."""
    headers = {"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store"}
    if isinstance(problem, NoBackendAvailable):
        headers["Retry-After"] = str(problem.retry_after)
    body = json.dumps({"error": problem.reason, "detail": problem.detail}).encode()
    return headers, body


def problem_response(problem: HTTPProblem) -> web.Response:
    headers, body = problem_answer(problem)
    return web.Response(status=problem.status, headers=headers, body=body)


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
