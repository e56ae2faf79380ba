"""The proxy's own routes on the public listener, under /__dumont/, as an aiohttp application.

The data plane (proxy.dataplane) forwards everything else to a backend; it hands these paths to
this app, which listens on a private Unix socket. It also renders the transition page for a
navigation that found no backend ready: the data plane asks for it with the
``X-Dumont-Transition: <retry-after>`` header, which it never passes on from a browser.

The reserved prefix never collides with code-server's paths (/, /stable-*, /vscode-remote-resource,
/proxy/<port>, /absproxy/<port>, /healthz, /login, /mint-key).
"""

from __future__ import annotations

from aiohttp import web

from .boundary import error_boundary
from .dataplane.exchange import TRANSITION_HEADER
from .errors import NotFound
from .pages import PAGES, PREFIX, SwitchView, TipBook, render_transition, setup_pages
from .workspace import Workspace

__all__ = ["WORKSPACE", "make_public_app"]

WORKSPACE = web.AppKey("workspace", Workspace)


async def proxy_health(request: web.Request) -> web.Response:
    workspace = request.app[WORKSPACE]
    return web.json_response(
        {"status": "ok", "active": workspace.machine.active},
        headers={"Cache-Control": "no-store"},
    )


async def proxy_status(request: web.Request) -> web.Response:
    status = request.app[WORKSPACE].status()
    status["tips"] = {
        tip_id: {"impressions": counts.impressions, "clicks": counts.clicks}
        for tip_id, counts in request.app[PAGES].tip_book.snapshot().items()
    }
    return web.json_response(status, headers={"Cache-Control": "no-store"})


async def transition(request: web.Request) -> web.Response:
    """The transition page for any path, when the data plane asks for it."""
    retry_after = request.headers.get(TRANSITION_HEADER, "")
    if not retry_after.isdigit():
        raise NotFound(f"no such page: {request.path}")
    return render_transition(request, request.app[PAGES].view, retry_after=int(retry_after))


def make_public_app(workspace: Workspace, view: SwitchView, tips: TipBook) -> web.Application:
    app = web.Application(middlewares=[error_boundary], client_max_size=0)
    app[WORKSPACE] = workspace
    app.router.add_get(f"{PREFIX}/healthz", proxy_health)
    app.router.add_get(f"{PREFIX}/status", proxy_status)
    assets = workspace.config.assets_dir
    setup_pages(
        app,
        view,
        workspace.config.pages,
        assets / "templates",
        assets / "static",
        tip_book=tips,
    )
    app.router.add_get("/{tail:.*}", transition)
    return app
