"""The data plane's question before it forwards a request: may this browser reach this workspace?

``SignInGate.refusal`` runs for every request on the public listener when sign-in is on (with
``mode = "none"`` there is no gate at all). It answers None (forward it) or the ``X-Dumont-Auth``
field with which the data plane hands the request to the pages app instead, which answers:

- ``login``: a navigation without a session: the redirect to the issuer (proxy.auth.routes);
- ``401``: anything else without a session (fetch, XHR, EventSource, a WebSocket upgrade): JSON,
  never a redirect (a script cannot follow one to a login page) and never the backend;
- ``403-page`` / ``403``: signed in, but not an owner of the Host's workspace.

A request with one Cookie field (a browser's) costs a count and an index of the field names, a
dict lookup of the field's value (``SignInGate.fields``: the session in it and the value without
the session cookie, remembered), the session's expiry and revocation, the owners check, and the
field put back without our cookie: about 1 us in-process (bench/signin.py).
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
# health check deploy scripts ask for. And the admin surface, which checks sessions itself
# (proxy.auth.admin): an admin need not own the Host's workspace, and its guard reads the
# session cookie that a request let through here would lose.
OPEN_PATHS = (f"{PREFIX}/auth/", f"{PREFIX}/static/", f"{PREFIX}/healthz", f"{PREFIX}/admin")
_NEEDLE = SESSION_COOKIE.encode() + b"="
_SEPARATORS = b" ;"


def session_cookie(head: RequestHead) -> str | None:
    """The session cookie's value from the head's Cookie fields (RFC 6265 5.4: "; " between)."""
    at, start = _locate(head, 0)
    return None if at < 0 else _value_at(head.raw_headers[at][1], start).decode("latin-1").strip()


def _locate(head: RequestHead, first: int) -> tuple[int, int]:
    """The first Cookie field from index ``first`` on holding the session cookie, and where its
    pair starts in the field's value; (-1, -1) if none does. In C as far as it goes: a loop over
    a dozen fields in Python cost 1.4 us, and list.index's ValueError on a miss 0.6 us, hence
    count the fields first and ask index only for those that are there."""
    names, raw = head.names, head.raw_headers
    left = (names[first:] if first else names).count(b"cookie")
    at = first - 1
    for _ in range(left):
        at = names.index(b"cookie", at + 1)
        start = _find_pair(raw[at][1])
        if start >= 0:
            return at, start
    return -1, -1


def _value_at(value: bytes, start: int) -> bytes:
    begin = start + len(_NEEDLE)
    end = value.find(b";", begin)
    return value[begin:end] if end >= 0 else value[begin:]


# Cookie field values remembered with what the gate made of them (below); past it, all forgotten.
FIELD_MEMO = 4096


class SignInGate:
    def __init__(self, sites: Sites, sessions: SessionBook, metrics: AuthMetrics) -> None:
        self.sites = sites
        self.sessions = sessions
        self.metrics = metrics
        # A browser sends the same Cookie field with every request until a cookie changes: for
        # each field value seen, the session in it (None: no valid one) and the value without
        # the session cookie. A request with one Cookie field then costs one dict lookup where
        # finding, reading and cutting out the cookie cost about 1.3 us. Liveness (expiry,
        # revocation) is still asked every time.
        self.fields: dict[bytes, tuple[Session | None, bytes]] = {}

    def _one_field(self, value: bytes) -> tuple[Session | None, bytes]:
        seen = self.fields.get(value)
        if seen is None:
            start = _find_pair(value)
            if start < 0:
                seen = (None, value)
            else:
                seen = (self.sessions.open(_value_at(value, start)), _cut(value, start))
            if len(self.fields) >= FIELD_MEMO:
                self.fields.clear()
            self.fields[value] = seen
        return seen

    def session_of(self, head: RequestHead, host: str | None) -> Session | None:
        return self._session_at(head, host, *_locate(head, 0))

    def _session_at(
        self, head: RequestHead, host: str | None, at: int, start: int
    ) -> Session | None:
        if at < 0:
            return None
        session = self.sessions.open(_value_at(head.raw_headers[at][1], start))
        return session if session is not None and session.host == host else None

    def refusal(self, head: RequestHead, host: str | None) -> bytes | None:
        if head.target.startswith(OPEN_PATHS):
            return None
        site = self.sites.for_host(host)
        if site is None:
            return None  # the pages app's 404: nobody's workspace to protect
        names = head.names
        kept: bytes | None = None  # with one Cookie field: its value without the session cookie
        if names.count(b"cookie") == 1:  # a browser's request
            at = names.index(b"cookie")
            session, kept = self._one_field(head.raw_headers[at][1])
            if session is not None and (session.host != host or not self.sessions.live(session)):
                session = None
        else:  # none, or several (a tossed second cookie, a front proxy's split fields)
            at, start = _locate(head, 0)
            session = self._session_at(head, host, at, start)
        if session is None:
            if _navigation(head):
                return LOGIN
            self.metrics.refused("no_session")
            return UNAUTHORIZED
        if not may_open(session, site.spec.owners):
            self.metrics.refused("not_owner")
            return FORBIDDEN_PAGE if _navigation(head) else FORBIDDEN
        if kept is None:
            _strip_from(head, at, start)
        elif kept:
            head.raw_headers[at] = (head.raw_headers[at][0], kept)
        else:  # the session cookie was the field's only cookie
            del head.raw_headers[at], names[at]
        return None


def strip_session_cookie(head: RequestHead) -> None:
    """The session is the proxy's: the backend (a rented machine) never sees its cookie, so it
    cannot replay it at another workspace. The head's other cookies pass as they came, every
    session cookie goes (a sibling Host can toss in a second one)."""
    _strip_from(head, *_locate(head, 0))


def _strip_from(head: RequestHead, at: int, start: int) -> None:
    """strip_session_cookie from the first session cookie on (``_locate``'s answer). Slices
    around each pair rather than split and join every pair, and finds fields with list.index:
    this runs on every request let through, and those two cost 2 us."""
    names, raw = head.names, head.raw_headers
    while at >= 0:
        name, value = raw[at]
        value = _cut(value, start)
        if value:
            raw[at] = (name, value)
            at += 1
        else:
            del raw[at], names[at]
        at, start = _locate(head, at)


def _cut(value: bytes, start: int) -> bytes:
    """A Cookie value without the session cookie's pair at ``start``, nor any later one."""
    while start >= 0:
        end = value.find(b";", start)
        before = value[:start].rstrip(b"; ")
        after = b"" if end < 0 else value[end + 1 :].lstrip(b"; ")
        value = before + b"; " + after if before and after else before or after
        start = _find_pair(value)
    return value


def _find_pair(value: bytes) -> int:
    """Where the session cookie's pair starts in a Cookie value, or -1 (``xdumont_session=`` is
    another cookie)."""
    start = value.find(_NEEDLE)
    while start > 0 and value[start - 1] not in _SEPARATORS:
        start = value.find(_NEEDLE, start + 1)
    return start


def _navigation(head: RequestHead) -> bool:
    return is_navigation_of(
        head.method, head.first(b"sec-fetch-mode"), head.first(b"accept") or "",
        b"upgrade" in head.fields,
    )  # fmt: skip
