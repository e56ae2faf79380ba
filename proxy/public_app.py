"""The proxy's own routes on the public listener, under /__dumont/, as an aiohttp application.

The data plane (proxy.dataplane) forwards everything else to a backend; it hands these paths to
this app, which listens on a private Unix socket. It also renders the transition page for a
navigation that found no backend ready: the data plane asks for it with the
``X-Dumont-Transition: <retry-after>`` header, which it never passes on from a browser. And it
answers a request whose Host no workspace serves (the data plane sends those here): a 404 page in
the transition page's style for a navigation, a JSON 404 otherwise, never another person's IDE.

Every route is about the workspace the request's Host names (proxy.sites), as the data plane saw
it: the same Host reaches the same workspace's events, status and buttons.

With sign-in at the proxy (issue 17) this app also signs people in and out (/__dumont/auth/...,
proxy.auth.routes) and answers what the data plane's gate refused: a request carrying
``X-Dumont-Auth`` (which a browser cannot send: the data plane drops X-Dumont-* from browsers) gets
the redirect to the issuer, a 401, or the 403 page, whatever its path.

The reserved prefix never collides with code-server's paths (/, /stable-*, /vscode-remote-resource,
/proxy/<port>, /absproxy/<port>, /healthz, /login, /mint-key).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from .boundary import error_boundary
from .dataplane.exchange import TRANSITION_HEADER
from .errors import NotFound
from .pages import PAGES, PREFIX, SwitchView, TipBook, is_navigation, render_transition, setup_pages
from .pages.render import SECURITY_HEADERS
from .sites import Site, Sites
from .workspaces.hosts import normalise_host

if TYPE_CHECKING:
    from .auth.service import Auth

__all__ = ["SITES", "make_public_app", "site_of"]

SITES = web.AppKey("sites", Sites)


def site_of(request: web.Request) -> Site:
    """The workspace the request's Host names; NotFound if none."""
    site = request.app[SITES].for_host(request.headers.get(hdrs.HOST))
    if site is None:
        raise NotFound(f"no workspace answers {request.host!r}")
    return site


def _tips_of(sites: Sites, shared: TipBook, request: web.Request) -> TipBook:
    site = sites.for_host(request.headers.get(hdrs.HOST))
    return shared if site is None else site.tips


def _view_of(request: web.Request) -> SwitchView:
    return site_of(request).view


async def proxy_health(request: web.Request) -> web.Response:
    """The proxy is up (deploy scripts and the container's HEALTHCHECK ask, by any name)."""
    sites = request.app[SITES]
    site = sites.for_host(request.headers.get(hdrs.HOST))
    return web.json_response(
        {
            "status": "ok",
            "active": None if site is None else site.workspace.machine.active,
            "workspaces": len(sites),
        },
        headers={"Cache-Control": "no-store"},
    )


async def proxy_status(request: web.Request) -> web.Response:
    status = site_of(request).workspace.status()
    status["tips"] = {
        tip_id: {"impressions": counts.impressions, "clicks": counts.clicks}
        for tip_id, counts in request.app[PAGES].tips_for(request).snapshot().items()
    }
    return web.json_response(status, headers={"Cache-Control": "no-store"})


async def fallback(request: web.Request) -> web.Response:
    """Any other path: the transition page when the data plane asks for it, the 404 page for a
    Host no workspace answers."""
    retry_after = request.headers.get(TRANSITION_HEADER, "")
    if retry_after.isdigit():
        return render_transition(request, _view_of(request), retry_after=int(retry_after))
    host = request.headers.get(hdrs.HOST)
    if request.app[SITES].for_host(host) is not None:
        raise NotFound(f"no such page: {request.path}")
    if not is_navigation(request):
        raise NotFound(f"no workspace answers {request.host!r}")
    html = request.app[PAGES].renderer.render_no_workspace(normalise_host(host))
    headers = {**SECURITY_HEADERS, hdrs.CACHE_CONTROL: "no-store"}
    return web.Response(text=html, status=404, content_type="text/html", headers=headers)


def make_public_app(sites: Sites, tips: TipBook, auth: Auth | None = None) -> web.Application:
    app = web.Application(middlewares=[error_boundary], client_max_size=0)
    app[SITES] = sites
    if auth is not None:
        auth.install(app)
    app.router.add_get(f"{PREFIX}/healthz", proxy_health)
    app.router.add_get(f"{PREFIX}/status", proxy_status)
    assets = sites.config.assets_dir
    setup_pages(
        app,
        None,
        sites.config.pages,
        assets / "templates",
        assets / "static",
        tip_book=tips,
        tip_books=partial(_tips_of, sites, tips),
        views=_view_of,
    )
    app.router.add_route("*", "/{tail:.*}", fallback)
    return app
