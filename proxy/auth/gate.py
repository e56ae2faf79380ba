"""The data plane's question before it forwards a request: may this browser reach this workspace?

``SignInGate.refusal`` runs for every request on the public listener when sign-in is on (with
``mode = "none"`` there is no gate at all). It answers None (forward it) or the ``X-Dumont-Auth``
field with which the data plane hands the request to the pages app instead, which answers:

- ``login``: a navigation without a session: the redirect to the issuer (proxy.auth.routes);
- ``401``: anything else without a session (fetch, XHR, EventSource, a WebSocket upgrade): JSON,
  never a redirect (a script cannot follow one to a login page) and never the backend;
- ``403-page`` / ``403``: signed in, but not an owner of the Host's workspace.

A hit costs a scan of the head's field names for Cookie, a find in its value, a dict lookup of the
cookie value (SessionBook keeps opened sessions) and the owners check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.pages import PREFIX, is_navigation_of

from .policy import may_open
from .sessions import SESSION_COOKIE, Session, SessionBook

if TYPE_CHECKING:
    from proxy.dataplane.messages import RequestHead
    from proxy.sites import Sites

    from .metrics import AuthMetrics

__all__ = ["AUTH_HEADER", "SignInGate", "session_cookie", "strip_session_cookie"]

AUTH_HEADER = "X-Dumont-Auth"
LOGIN = b"X-Dumont-Auth: login"
UNAUTHORIZED = b"X-Dumont-Auth: 401"
FORBIDDEN_PAGE = b"X-Dumont-Auth: 403-page"
FORBIDDEN = b"X-Dumont-Auth: 403"
# The proxy's own paths anyone may load: signing in itself, the pages' CSS and icons, and the
# health check deploy scripts ask for.
OPEN_PATHS = (f"{PREFIX}/auth/", f"{PREFIX}/static/", f"{PREFIX}/healthz")
_NEEDLE = SESSION_COOKIE.encode() + b"="
_SEPARATORS = b" ;"


def session_cookie(head: RequestHead) -> str | None:
    """The session cookie's value from the head's Cookie fields (RFC 6265 5.4: "; " between).
    list.index finds the field in C: a loop over a dozen fields in Python cost 1.4 us."""
    names, raw = head.names, head.raw_headers
    at = -1
    while True:
        try:
            at = names.index(b"cookie", at + 1)
        except ValueError:
            return None
        value = raw[at][1]
        start = value.find(_NEEDLE)
        while start > 0 and value[start - 1] not in _SEPARATORS:
            start = value.find(_NEEDLE, start + 1)
        if start >= 0:
            begin = start + len(_NEEDLE)
            end = value.find(b";", begin)
            return value[begin : end if end >= 0 else len(value)].decode("latin-1").strip()


class SignInGate:
    def __init__(self, sites: Sites, sessions: SessionBook, metrics: AuthMetrics) -> None:
        self.sites = sites
        self.sessions = sessions
        self.metrics = metrics

    def session_of(self, head: RequestHead, host: str | None) -> Session | None:
        value = session_cookie(head)
        if value is None:
            return None
        session = self.sessions.open(value)
        return session if session is not None and session.host == host else None

    def refusal(self, head: RequestHead, host: str | None) -> bytes | None:
        if head.target.startswith(OPEN_PATHS):
            return None
        site = self.sites.for_host(host)
        if site is None:
            return None  # the pages app's 404: nobody's workspace to protect
        session = self.session_of(head, host)
        if session is None:
            if _navigation(head):
                return LOGIN
            self.metrics.refused("no_session")
            return UNAUTHORIZED
        if not may_open(session, site.spec.owners):
            self.metrics.refused("not_owner")
            return FORBIDDEN_PAGE if _navigation(head) else FORBIDDEN
        strip_session_cookie(head)
        return None


def strip_session_cookie(head: RequestHead) -> None:
    """The session is the proxy's: the backend (a rented machine) never sees its cookie, so it
    cannot replay it at another workspace. The head's other cookies pass as they came."""
    names, raw = head.names, head.raw_headers
    for at in range(len(names) - 1, -1, -1):  # backwards: a field may be deleted
        if names[at] != b"cookie":
            continue
        name, value = raw[at]
        if _NEEDLE in value:
            kept = b"; ".join(
                pair
                for part in value.split(b";")
                if (pair := part.strip()) and not pair.startswith(_NEEDLE)
            )
            if kept:
                raw[at] = (name, kept)
            else:
                del raw[at], names[at]


def _navigation(head: RequestHead) -> bool:
    return is_navigation_of(
        head.method, head.first(b"sec-fetch-mode"), head.first(b"accept") or "",
        b"upgrade" in head.fields,
    )  # fmt: skip
