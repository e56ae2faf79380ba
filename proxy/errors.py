"""The proxy's exception tree, mapped to HTTP statuses at one boundary (proxy.boundary).

DumontError                     root: every error this package raises on purpose
├── ConfigError                 bad configuration; start-up stops with one line naming the key
└── HTTPProblem                 has an HTTP status; only proxy.boundary turns it into a response
    ├── BadRequest              400
    ├── Unauthorized            401  (missing or wrong admin token)
    ├── Forbidden               403  (cross-origin call to a same-origin route)
    ├── NotFound                404
    ├── Conflict                409  (admin command the state machine refuses now)
    ├── UpstreamError           502  (the backend refused, reset or sent garbage)
    │   └── UpstreamTimeout     504  (the backend did not answer in time)
    └── NoBackendAvailable      503  (nothing healthy to serve; carries Retry-After)

A hook that fails is not an exception: proxy.hooks.run_hook returns its outcome, and the failover
machine decides what the failure means (HookFinished in, Cause.HOOK_FAILURE on the switch record).
ConfigError is the repository's one error for a wrong setting (provisioning's bad input is its
UsageError).
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "ConfigError",
    "Conflict",
    "DumontError",
    "Forbidden",
    "HTTPProblem",
    "NoBackendAvailable",
    "NotFound",
    "StoreUnavailable",
    "Unauthorized",
    "UpstreamError",
    "UpstreamTimeout",
]


class DumontError(Exception):
    """Root of every error the proxy raises on purpose."""


class ConfigError(DumontError):
    """A setting is wrong. The message names the key, so start-up can print one line and stop."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config error: {key}: {problem}")
        self.key = key
        self.problem = problem


class HTTPProblem(DumontError):
    """An error that has an HTTP status. Raised anywhere, answered only at the boundary."""

    status: int = 500
    reason: str = "internal error"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.reason)
        self.detail = detail or self.reason


class BadRequest(HTTPProblem):
    status = 400
    reason = "bad request"


class Unauthorized(HTTPProblem):
    status = 401
    reason = "missing or invalid bearer token"


class Forbidden(HTTPProblem):
    status = 403
    reason = "forbidden"


class NotFound(HTTPProblem):
    status = 404
    reason = "not found"


class Conflict(HTTPProblem):
    status = 409
    reason = "conflict"


class UpstreamError(HTTPProblem):
    status = 502
    reason = "bad gateway: the backend failed"


class UpstreamTimeout(UpstreamError):
    status = 504
    reason = "gateway timeout: the backend did not answer in time"


class NoBackendAvailable(HTTPProblem):
    status = 503
    reason = "no healthy backend; retry shortly"

    def __init__(self, detail: str | None = None, retry_after: int = 2) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class StoreUnavailable(HTTPProblem):
    """Proxy replicas: the cluster's store did not take a change; nothing was applied."""

    status = 503
    reason = "the cluster's store is not available; retry shortly"
