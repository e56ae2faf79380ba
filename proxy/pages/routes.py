"""The pages' routes under /__dumont/, and the transition page the core renders for navigations
that find no backend ready.

    GET  /__dumont/static/{name}       a fixed list of files (static_files.STATIC_FILES)
    GET  /__dumont/events              server-sent SwitchSnapshots (events.py)
    GET  /__dumont/strings             the catalogue in the browser's language, as JSON (watcher.js)
    GET  /__dumont/transition          the page itself (200); ?return=/path, ?embedded=1 (watcher)
    GET  /__dumont/tips/{id}/click     counts a click, 302 to the tip's link
    POST /__dumont/failback            same-origin only; asks the core for a failback (202)
    POST /__dumont/park/keep           same-origin only; "Keep it" on the idle-GPU notice
    POST /__dumont/resume              same-origin only; "Bring the GPU back" (202)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from proxy.errors import Forbidden, NotFound

from .config import PagesConfig
from .events import end_streams, stream_events
from .i18n import choose_language, strings_for
from .render import SECURITY_HEADERS, TransitionRenderer, safe_return_path
from .state import PAGES, PagesState, ViewLookup
from .static_files import load_static, serve_static
from .tips import TIP_COOKIE, TIP_COOKIE_MAX_AGE, TipBook
from .view import SwitchView

__all__ = [
    "PREFIX",
    "cross_origin_problem",
    "is_navigation",
    "is_navigation_of",
    "render_transition",
    "setup_pages",
]

PREFIX = "/__dumont"
KEEPALIVE_INTERVAL = 15.0


def setup_pages(
    app: web.Application,
    view: SwitchView | None,
    config: PagesConfig,
    templates_dir: Path,
    static_dir: Path,
    *,
    keepalive_interval: float = KEEPALIVE_INTERVAL,
    rng: random.Random | None = None,
    tip_book: TipBook | None = None,
    views: ViewLookup | None = None,
    tip_books: Callable[[web.Request], TipBook] | None = None,
) -> None:
    """Register the pages' routes on `app` and keep their state in `app[PAGES]`. Every other path
    under /__dumont/ answers 404, so register the core's own /__dumont/ routes (healthz, status)
    before calling this.

    Call it before the core adds its catch-all forwarding route (aiohttp matches in order). Reads
    the template and every static file now, so a broken install fails at start-up. `tip_book` is
    the proxy's (metrics and the dashboard read its counts); `rng` makes tip assignment
    reproducible in tests.
    """
    # One view for every request, or ``views``: a lookup by request (the proxy's sites, by Host).
    if views is None:
        if view is None:
            raise TypeError("setup_pages needs a view or views")
        views = _always(view)
    app[PAGES] = PagesState(
        views=views,
        config=config,
        renderer=TransitionRenderer(templates_dir),
        tip_book=TipBook.for_config(config, rng) if tip_book is None else tip_book,
        static=load_static(static_dir),
        keepalive_interval=keepalive_interval,
        tip_books=tip_books,
    )
    router = app.router
    router.add_get(f"{PREFIX}/static/{{name}}", _static, allow_head=True)
    router.add_get(f"{PREFIX}/events", stream_events, allow_head=False)
    router.add_get(f"{PREFIX}/strings", _strings)
    router.add_get(f"{PREFIX}/transition", _transition)
    router.add_get(f"{PREFIX}/tips/{{tip_id}}/click", _tip_click)
    for path, handler in (("failback", _failback), ("park/keep", _keep), ("resume", _resume)):
        resource = router.add_resource(f"{PREFIX}/{path}")
        resource.add_route(hdrs.METH_POST, handler)
        resource.add_route(hdrs.METH_ANY, _post_only)
    # The reserved prefix never reaches a backend: an unknown /__dumont/ path is ours to refuse.
    router.add_route(hdrs.METH_ANY, f"{PREFIX}/{{tail:.*}}", _unknown)
    app.on_shutdown.append(end_streams)
    app.on_cleanup.append(_close_tasks)


def is_navigation(request: web.Request) -> bool:
    """A browser loading a document (a link, the address bar, a reload), as opposed to fetch, XHR
    or a WebSocket: only navigations may be answered with the transition page."""
    headers = request.headers
    return is_navigation_of(
        request.method,
        headers.get("Sec-Fetch-Mode"),
        headers.get(hdrs.ACCEPT, ""),
        hdrs.UPGRADE in headers,
    )


def is_navigation_of(method: str, fetch_mode: str | None, accept: str, upgrade: bool) -> bool:
    """is_navigation from the fields it reads (the data plane holds requests of its own)."""
    if method != hdrs.METH_GET or upgrade:
        return False
    if fetch_mode is not None:
        return fetch_mode == "navigate"
    # Browsers without Fetch Metadata: a document request is the one that asks for HTML.
    return "text/html" in accept


def render_transition(
    request: web.Request, view: SwitchView, *, status: int = 503, retry_after: int = 2
) -> web.Response:
    """The transition page for the URL the browser asked for; once a backend is ready the page
    reloads that same URL. The core answers navigations with it (status 503, Retry-After) while
    no backend is ready. Requires setup_pages() on the request's application."""
    response = _transition_page(
        request, view, return_path=request.raw_path, embedded=False, status=status
    )
    if status == 503:
        response.headers[hdrs.RETRY_AFTER] = str(retry_after)
    return response


def _transition_page(
    request: web.Request, view: SwitchView, *, return_path: str, embedded: bool, status: int
) -> web.Response:
    pages = request.app[PAGES]
    language = choose_language(request.headers.get(hdrs.ACCEPT_LANGUAGE))
    cookie = request.cookies.get(TIP_COOKIE)
    tip_book = pages.tips_for(request)
    tip = tip_book.assign(cookie)
    if tip is not None:
        tip_book.count_impression(tip)
    html = pages.renderer.render(
        view.snapshot(), language, tip, return_path=safe_return_path(return_path), embedded=embedded
    )
    response = web.Response(
        text=html, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )
    response.headers[hdrs.CONTENT_LANGUAGE] = language
    response.headers[hdrs.VARY] = "Accept-Language, Cookie"
    if tip is not None and tip.id != cookie:
        response.set_cookie(
            TIP_COOKIE, tip.id, max_age=TIP_COOKIE_MAX_AGE, path="/", httponly=True, samesite="Lax"
        )
    return response


async def _transition(request: web.Request) -> web.Response:
    pages = request.app[PAGES]
    return _transition_page(
        request,
        pages.view_for(request),
        return_path=request.query.get("return", "/"),
        embedded=request.query.get("embedded") == "1",
        status=200,
    )


def _always(view: SwitchView) -> ViewLookup:
    def lookup(request: web.Request) -> SwitchView:
        return view

    return lookup


async def _static(request: web.Request) -> web.Response:
    return serve_static(request, request.app[PAGES].static)


async def _strings(request: web.Request) -> web.Response:
    language = choose_language(request.headers.get(hdrs.ACCEPT_LANGUAGE))
    return web.json_response(
        {"language": language, "strings": dict(strings_for(language))},
        headers={hdrs.VARY: "Accept-Language", hdrs.CACHE_CONTROL: "no-cache"},
    )


async def _tip_click(request: web.Request) -> web.Response:
    pages = request.app[PAGES]
    tip_book = pages.tips_for(request)
    tip = tip_book.get(request.match_info["tip_id"])
    if tip is None:
        raise NotFound("no such tip")
    tip_book.count_click(tip)
    raise web.HTTPFound(tip.link, headers={hdrs.CACHE_CONTROL: "no-store"})


async def _failback(request: web.Request) -> web.Response:
    _require_same_origin(request)
    await request.app[PAGES].view_for(request).request_failback()
    return web.json_response({"failback": "requested"}, status=202)


async def _keep(request: web.Request) -> web.Response:
    _require_same_origin(request)
    await request.app[PAGES].view_for(request).keep_gpu()
    return web.json_response({"keep": "recorded"})


async def _resume(request: web.Request) -> web.Response:
    _require_same_origin(request)
    await request.app[PAGES].view_for(request).resume_gpu()
    return web.json_response({"resume": "started"}, status=202)


def _require_same_origin(request: web.Request) -> None:
    problem = cross_origin_problem(request)
    if problem is not None:
        raise Forbidden(problem)


def cross_origin_problem(request: web.Request) -> str | None:
    """CSRF guard for state-changing routes: the browser must say the call comes from a page of
    this very host. Sec-Fetch-Site when the browser sends it, else Origin; neither is a refusal.
    None when it does, else why not (one line). The admin surface (proxy.auth.admin) asks too."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        return f"cross-site request (Sec-Fetch-Site: {site})"
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        if site is None:
            return "no Origin or Sec-Fetch-Site header: cannot tell where this came from"
        return None
    parts = urlsplit(origin)
    if parts.scheme not in {"http", "https"} or parts.netloc.lower() != request.host.lower():
        return "Origin does not match Host"
    return None


async def _post_only(request: web.Request) -> web.Response:
    raise web.HTTPMethodNotAllowed(request.method, [hdrs.METH_POST])


async def _unknown(request: web.Request) -> web.Response:
    raise NotFound(f"no such page: {request.path}")


async def _close_tasks(app: web.Application) -> None:
    pages: PagesState = app[PAGES]
    await pages.tasks.close()
