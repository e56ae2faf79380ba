"""The dashboard and the control API for admins with a browser: /__dumont/admin/ on the public
listener, when sign-in is on (issue 17).

Under that prefix is the control app itself (proxy.control_app, with the dashboard), so every
control URL has a browser twin: ``/dashboard`` is ``/__dumont/admin/dashboard``,
``POST /admin/failover`` is ``POST /__dumont/admin/admin/failover``. The control listener and its
bearer token stay as they are, for automation. What changes here is who may ask, decided by one
guard in front of every route of the mounted app:

- no valid session at this Host: a navigation goes to sign in (and comes back), anything else 401;
- signed in, but not one of ``[auth] admins``: the 403 page, or 403 JSON;
- an admin: allowed to read; a state-changing request (anything but GET, HEAD, OPTIONS) must also
  come from a page of this origin (Sec-Fetch-Site, else Origin) and carry the session's CSRF token
  in X-CSRF-Token (proxy.auth.csrf), or it is refused with 403 and one line, nothing changed;
- each state-changing request an admin makes is logged with their address, with its outcome.

A page of the Host's backend (code-server, or whatever a user serves through its /proxy/PORT/) is
same-origin with /__dumont/admin/ at that Host: a script there can read the dashboard's CSRF
token as the admin's own page can. ``[auth] admin_host`` closes that: the surface then answers
only at that Host (404 elsewhere), and stays shut (403) while any workspace serves it.

Why not the session cookie on the control listener instead: that listener is loopback (or a
private network) by default and has no Host of its own a provider could send a browser back to;
the session cookie belongs to the public Host it was issued at (a cookie is per host, and the
proxy binds the session to it too). Serving the same app on the public listener keeps one origin,
one cookie and one sign-in, and leaves the control listener exactly as automation knows it.

The data plane's gate lets /__dumont/admin through untouched (proxy.auth.gate.OPEN_PATHS): an
admin need not own the Host's workspace, and the guard needs the session cookie the gate would
otherwise take out.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from proxy.boundary import Handler
from proxy.control_app import make_control_app
from proxy.dashboard import ADMIN_EMAIL, CSRF_TOKEN
from proxy.errors import HTTPProblem, NotFound, Unauthorized
from proxy.pages import PREFIX, cross_origin_problem, is_navigation
from proxy.workspaces.hosts import normalise_host

from .csrf import CSRF_HEADER, CsrfTokens
from .errors import CsrfRefused, NotAdmin, SharedAdminHost, SignInRequired
from .policy import is_admin
from .routes import SignIn, start_login
from .sessions import SESSION_COOKIE, Session

if TYPE_CHECKING:
    from proxy.sites import Sites

__all__ = ["ADMIN_ROOT", "ADMIN_SESSION", "AdminGuard", "make_admin_app"]

log = logging.getLogger("dumont.auth")
ADMIN_ROOT = f"{PREFIX}/admin"
ADMIN_SESSION = web.RequestKey("admin_session", Session)
# What a browser may send without a CSRF token: requests that change nothing.
SAFE_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS})


class AdminGuard:
    """Who may use the admin surface, and the answers to those who may not."""

    def __init__(
        self,
        sign_in: SignIn,
        admins: Collection[str],
        csrf: CsrfTokens,
        sites: Sites,
        admin_host: str | None = None,
    ) -> None:
        self.sign_in = sign_in
        self.admins = admins
        self.csrf = csrf
        self.sites = sites
        self.admin_host = admin_host

    def check_host(self, request: web.Request) -> None:
        """With ``admin_host``: that Host only, and only while no workspace serves it (workspaces
        come and go through the control API, so this is asked per request, not at start-up)."""
        if self.admin_host is None:
            return
        host = request.headers.get(hdrs.HOST)
        if normalise_host(host) != self.admin_host:
            self.refused("wrong_host")
            raise NotFound(f"no such page: {request.path}")
        if self.sites.for_host(host) is not None:
            self.refused("wrong_host")
            log.error("auth: the admin surface is shut: a workspace serves admin_host %s",
                      self.admin_host)  # fmt: skip
            raise SharedAdminHost(
                f"a workspace serves {self.admin_host}; give [auth] admin_host a name none serves"
            )

    def session_of(self, request: web.Request) -> Session | None:
        value = request.cookies.get(SESSION_COOKIE)
        session = None if value is None else self.sign_in.sessions.open(value)
        if session is None or session.host != request.headers.get(hdrs.HOST):
            return None
        return session

    def refused(self, reason: str) -> None:
        self.sign_in.metrics.admin_refusals.labels(reason).inc()

    async def check(self, request: web.Request) -> Session | web.Response:
        """The admin's session, or the answer for someone who is not one (raises for calls)."""
        self.check_host(request)
        session = self.session_of(request)
        if session is None:
            self.refused("no_session")
            if is_navigation(request):
                return await start_login(request, request.path_qs)
            raise SignInRequired("sign in first: no valid session")
        if not is_admin(session, self.admins):
            self.refused("not_admin")
            log.warning("auth: %s refused at the admin surface (%s %s): not an admin",
                        session.email, request.method, request.path)  # fmt: skip
            if is_navigation(request):
                return self.sign_in.render(
                    403,
                    title="Admins only",
                    status="403 · admins only",
                    detail=f"{session.email} is not an admin of this proxy.",
                    hint="Ask for a place in [auth] admins, or sign in as someone else.",
                    action_url=f"{PREFIX}/auth/logout",
                    action="Sign out",
                )
            raise NotAdmin(f"{session.email} is not an admin of this proxy")
        return session

    def check_csrf(self, request: web.Request, session: Session) -> None:
        """A state-changing request must come from this origin and carry this session's token."""
        problem = cross_origin_problem(request)
        why = "cross_site"
        if problem is None and not self.csrf.valid(session.sid, request.headers.get(CSRF_HEADER)):
            why = "csrf"
            given = "wrong" if CSRF_HEADER in request.headers else "no"
            problem = f"{given} {CSRF_HEADER} for this session: reload the dashboard"
        if problem is not None:
            self.refused(why)
            log.warning("auth: %s %s %s by %s refused: %s", request.method, request.path,
                        request.host, session.email, problem)  # fmt: skip
            raise CsrfRefused(why, problem)


GUARD = web.AppKey("admin_guard", AdminGuard)


@web.middleware
async def guard_admin(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard = request.app[GUARD]
    checked = await guard.check(request)
    if isinstance(checked, web.Response):
        return checked
    session = checked
    request[ADMIN_SESSION] = session
    request[ADMIN_EMAIL] = session.email
    request[CSRF_TOKEN] = guard.csrf.token(session.sid)
    if request.method in SAFE_METHODS:
        return await handler(request)
    guard.check_csrf(request, session)
    # The admin's address on every action: the control listener's log says "the token", this
    # one says who.
    try:
        response = await handler(request)
    except HTTPProblem as problem:
        log.info("admin: %s %s %s at %s -> %d: %s", session.email, request.method,
                 request.path, request.host, problem.status, problem.detail)  # fmt: skip
        raise
    guard.sign_in.metrics.admin_actions.inc()
    log.info("admin: %s %s %s at %s -> %d", session.email, request.method, request.path,
             request.host, response.status)  # fmt: skip
    return response


def _session_checked(request: web.Request) -> None:
    """The control app's access check on this surface: the guard has let the request in. A
    second lock, should a route ever be mounted without the guard in front of it."""
    if ADMIN_SESSION not in request:
        raise Unauthorized("admins only: no admin session")


async def _to_dashboard(request: web.Request) -> web.Response:
    raise web.HTTPFound(f"{ADMIN_ROOT}/dashboard")


def make_admin_app(sites: Sites, guard: AdminGuard) -> web.Application:
    """The control app with the guard in front, for ``app.add_subapp(ADMIN_ROOT, ...)``."""
    app = make_control_app(sites, root=ADMIN_ROOT, access=_session_checked)
    app.router.add_get("/", _to_dashboard)  # /__dumont/admin/: what an admin types
    app[GUARD] = guard
    # After the control app's error boundary, so that the guard's refusals are answered there.
    app.middlewares.append(guard_admin)
    return app
