"""Signing in and out, on the pages app: /__dumont/auth/login, /callback, /logout, /signed-out,
and the answers to the requests the gate refused (``X-Dumont-Auth``).

The login start binds ``state``, ``nonce`` and the PKCE verifier to the browser with a short-lived
sealed cookie scoped to /__dumont/auth/; the callback accepts a ``state`` only once, only from the
browser holding that cookie, and only within ``LOGIN_LIFETIME``. The return URL is a path on the
same origin, checked when it is stored and again when it is used (no open redirect).
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import hdrs, web

from proxy.boundary import Handler
from proxy.pages import PREFIX
from proxy.pages.render import SECURITY_HEADERS, safe_return_path

from .config import AuthConfig
from .errors import SignInRefused, SignInRequired, TooManySignIns
from .gate import AUTH_HEADER
from .limits import AttemptLimiter
from .metrics import AuthMetrics
from .oidc import Issuer
from .policy import admitted_identity
from .seal import Sealer
from .sessions import SESSION_COOKIE, SessionBook

__all__ = ["AUTH", "SignIn", "add_auth_routes", "answer_refusal"]

log = logging.getLogger("dumont.auth")
# One login cookie per sign-in under way, named after its state: two tabs that both found their
# session expired sign in side by side instead of the second overwriting the first's state.
LOGIN_COOKIE = "dumont_login_"
_STATE_TAG = re.compile(r"[A-Za-z0-9_-]{12}")
LOGIN_PATH = f"{PREFIX}/auth/"
CALLBACK = f"{PREFIX}/auth/callback"
SIGNED_OUT = f"{PREFIX}/auth/signed-out"
_LOGIN_PURPOSE = b"dumont login"
# Seconds between the redirect to the issuer and the callback: enough to type a password and
# answer a second factor, short enough that a stolen login cookie is soon worthless.
LOGIN_LIFETIME = 600.0
# States already redeemed, remembered until their login cookie has expired anyway.
USED_STATES = 100_000


class SignIn:
    """Everything sign-in holds: the issuer, the sessions, the limits, the metrics, the pages."""

    def __init__(
        self,
        auth: AuthConfig,
        issuer: Issuer,
        sealer: Sealer,
        sessions: SessionBook,
        metrics: AuthMetrics,
        templates_dir: Path,
    ) -> None:
        self.auth = auth
        self.issuer = issuer
        self.sealer = sealer
        self.sessions = sessions
        self.metrics = metrics
        self.limiter = AttemptLimiter(auth.attempts_per_minute, auth.attempts_burst)
        self.used_states: OrderedDict[str, float] = OrderedDict()
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.page = env.get_template("message.html")

    def render(self, code: int, **fields: Any) -> web.Response:
        headers = {**SECURITY_HEADERS, hdrs.CACHE_CONTROL: "no-store"}
        html = self.page.render({"action_url": None, "action": "", **fields})
        return web.Response(text=html, status=code, content_type="text/html", headers=headers)

    def take_state(self, state: str) -> bool:
        """Whether ``state`` is redeemed for the first time (then it never is again)."""
        now = time.monotonic()
        used = self.used_states
        while used and next(iter(used.values())) < now:
            used.popitem(last=False)
        if state in used:
            return False
        used[state] = now + LOGIN_LIFETIME
        if len(used) > USED_STATES:
            used.popitem(last=False)
        return True


AUTH = web.AppKey("auth", SignIn)


def _client_address(request: web.Request) -> str:
    # The data plane sets X-Forwarded-For: the peer, after a trusted front proxy's own list.
    forwarded = request.headers.get("X-Forwarded-For", "")
    return forwarded.split(",")[0].strip() or "unknown"


def _secure(request: web.Request) -> bool:
    return request.headers.get("X-Forwarded-Proto", "http") == "https"


def _origin(request: web.Request) -> str:
    return f"{'https' if _secure(request) else 'http'}://{request.host}"


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={hdrs.LOCATION: location, "Cache-Control": "no-store"})


def _limit(sign_in: SignIn, request: web.Request, what: str) -> None:
    address = _client_address(request)
    if not sign_in.limiter.allow(address):
        sign_in.metrics.refused("rate_limited")
        log.warning("auth: %s from %s refused: too many attempts", what, address)
        raise TooManySignIns(f"too many sign-in attempts from {address}")


async def start_login(request: web.Request, wanted: str) -> web.Response:
    """The redirect to the issuer, with ``state``, ``nonce`` and PKCE bound to this browser."""
    sign_in = request.config_dict[AUTH]  # also asked from the admin surface, a sub-application
    _limit(sign_in, request, "sign-in start")
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    location = await sign_in.issuer.authorization_url(
        _origin(request) + CALLBACK, sign_in.auth.scopes, state, nonce, verifier
    )
    login = {
        "state": state,
        "nonce": nonce,
        "verifier": verifier,
        "next": safe_return_path(wanted),
        "exp": time.time() + LOGIN_LIFETIME,
    }
    response = _redirect(location)
    response.set_cookie(
        login_cookie(state),
        sign_in.sealer.seal(_LOGIN_PURPOSE, login),
        path=LOGIN_PATH,
        max_age=int(LOGIN_LIFETIME),
        httponly=True,
        secure=_secure(request),
        samesite="Lax",  # the issuer's redirect back is a top-level GET: Lax sends the cookie
    )
    sign_in.metrics.starts.inc()
    return response


def login_cookie(state: str) -> str:
    return LOGIN_COOKIE + state[:12]


async def login(request: web.Request) -> web.Response:
    return await start_login(request, request.query.get("next", "/"))


def _refuse(sign_in: SignIn, request: web.Request, problem: SignInRefused) -> SignInRefused:
    sign_in.metrics.refused(problem.why)
    log.warning("auth: sign-in refused (%s) for %s: %s", problem.why,
                _client_address(request), problem.detail)  # fmt: skip
    return problem


async def callback(request: web.Request) -> web.Response:
    sign_in = request.app[AUTH]
    _limit(sign_in, request, "callback")
    state = request.query.get("state", "")
    tag_ok = _STATE_TAG.fullmatch(state[:12]) is not None
    sealed = request.cookies.get(login_cookie(state)) if tag_ok else None
    login = None if sealed is None else sign_in.sealer.open(_LOGIN_PURPOSE, sealed)
    if login is None or float(login.get("exp", 0)) < time.time():
        raise _refuse(sign_in, request, SignInRefused("state", "no sign-in under way here"))
    if not hmac.compare_digest(str(login.get("state", "")), state):
        raise _refuse(sign_in, request, SignInRefused("state", "state does not match"))
    if not sign_in.take_state(state):
        raise _refuse(sign_in, request, SignInRefused("state", "state already used"))
    if "error" in request.query:
        error = request.query.get("error", "")[:100]
        raise _refuse(sign_in, request, SignInRefused("provider_error", f"the issuer said {error}"))
    redirect_uri = _origin(request) + CALLBACK
    try:
        token = await sign_in.issuer.redeem(
            request.query.get("code", ""), redirect_uri, str(login["verifier"])
        )
        claims = await sign_in.issuer.validate(token, str(login["nonce"]))
        email, groups = admitted_identity(sign_in.auth, claims)
    except SignInRefused as problem:
        raise _refuse(sign_in, request, problem) from None
    session, value = sign_in.sessions.issue(email, groups, request.headers.get(hdrs.HOST, ""))
    sign_in.metrics.sign_ins.inc()
    log.info("auth: %s signed in (session %s…) from %s", email, session.sid[:6],
             _client_address(request))  # fmt: skip
    target = safe_return_path(str(login.get("next", "/")))
    response = _redirect(target)
    response.set_cookie(
        SESSION_COOKIE,
        value,
        path="/",
        max_age=int(sign_in.sessions.lifetime),
        httponly=True,
        secure=_secure(request),
        samesite="Lax",
    )
    response.del_cookie(login_cookie(state), path=LOGIN_PATH)
    return response


async def logout(request: web.Request) -> web.Response:
    sign_in = request.app[AUTH]
    value = request.cookies.get(SESSION_COOKIE)
    session = None if value is None else sign_in.sessions.open(value)
    if session is not None:
        sign_in.sessions.revoke(session)
        sign_in.metrics.logouts.inc()
        log.info("auth: %s signed out (session %s…)", session.email, session.sid[:6])
    after = _origin(request) + SIGNED_OUT
    location = await sign_in.issuer.end_session_url(None, after) or SIGNED_OUT
    response = _redirect(location)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def signed_out(request: web.Request) -> web.Response:
    return request.app[AUTH].render(
        200,
        title="Signed out",
        status="signed out",
        detail="You are signed out.",
        hint="Your IDE keeps running; sign in again to go back to it.",
        action_url="/",
        action="Sign in",
    )


async def answer_refusal(request: web.Request, refusal: str) -> web.Response:
    """The answer to a request the gate refused (its ``X-Dumont-Auth`` value)."""
    sign_in = request.app[AUTH]
    if refusal == "login":
        return await start_login(request, request.path_qs)
    if refusal == "403-page":
        value = request.cookies.get(SESSION_COOKIE)
        session = None if value is None else sign_in.sessions.open(value)
        who = session.email if session is not None else "you"
        log.info("auth: %s may not open %s (not an owner)", who, request.host)
        return sign_in.render(
            403,
            title="Not your workspace",
            status="403 · not your workspace",
            detail=f"{who} does not own the IDE at {request.host}.",
            hint="Ask its owner to add you, or sign in as someone else.",
            action_url=f"{PREFIX}/auth/logout",
            action="Sign out",
        )
    if refusal == "403":
        raise SignInRefused("not_owner", f"not an owner of the workspace at {request.host}")
    raise SignInRequired("sign in first: no valid session")


@web.middleware
async def refused_by_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request the data plane's gate refused carries its ``X-Dumont-Auth``: answer that."""
    refusal = request.headers.get(AUTH_HEADER)
    if refusal is not None:
        return await answer_refusal(request, refusal)
    return await handler(request)


def add_auth_routes(app: web.Application, sign_in: SignIn) -> None:
    app[AUTH] = sign_in
    app.middlewares.append(refused_by_gate)
    app.router.add_get(f"{PREFIX}/auth/login", login)
    app.router.add_get(CALLBACK, callback)
    app.router.add_route("GET", f"{PREFIX}/auth/logout", logout)
    app.router.add_route("POST", f"{PREFIX}/auth/logout", logout)
    app.router.add_get(SIGNED_OUT, signed_out)
