"""Sign-in's branch of the proxy's exception tree (proxy.errors), answered by proxy.boundary.

HTTPProblem
├── Unauthorized
│   └── SignInRequired      401  a call (fetch, XHR, WebSocket) without a valid session
├── Forbidden
│   ├── SignInRefused       403  the callback failed a check; ``why`` is the metric's reason label
│   ├── NotAdmin            403  signed in, but not one of [auth] admins (the admin surface)
│   ├── SharedAdminHost     403  [auth] admin_host is also a workspace's: its backend shares the
│                                admin surface's origin, so the surface stays shut
│   └── CsrfRefused         403  a state-changing admin request without this session's CSRF
│                                token, or from another origin; ``why`` is the metric's label
├── TooManySignIns          429  sign-in starts or callbacks from one address over the limit
└── UpstreamError
    └── IssuerUnavailable   502  the OpenID provider did not answer, or answered garbage
"""

from __future__ import annotations

from proxy.errors import Forbidden, HTTPProblem, Unauthorized, UpstreamError

__all__ = [
    "CsrfRefused",
    "IssuerUnavailable",
    "NotAdmin",
    "SharedAdminHost",
    "SignInRefused",
    "SignInRequired",
    "TooManySignIns",
]


class SignInRequired(Unauthorized):
    reason = "sign in first"


class SignInRefused(Forbidden):
    reason = "sign-in refused"

    def __init__(self, why: str, detail: str) -> None:
        super().__init__(detail)
        self.why = why


class NotAdmin(Forbidden):
    reason = "admins only"


class SharedAdminHost(Forbidden):
    reason = "the admin surface is shut at a Host a workspace serves"


class CsrfRefused(Forbidden):
    reason = "CSRF check failed; nothing was changed"

    def __init__(self, why: str, detail: str) -> None:
        super().__init__(detail)
        self.why = why


class TooManySignIns(HTTPProblem):
    status = 429
    reason = "too many sign-in attempts; wait a minute"


class IssuerUnavailable(UpstreamError):
    reason = "the sign-in provider did not answer"
