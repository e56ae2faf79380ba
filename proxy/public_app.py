"""The public listener: the proxy's own routes under /__dumont/, everything else forwarded.

The reserved prefix never collides with code-server's paths (/, /stable-*, /vscode-remote-resource,
/proxy/<port>, /absproxy/<port>, /healthz, /login, /mint-key).
"""

from __future__ import annotations

import time

from aiohttp import web

from .boundary import RENDERER, error_boundary
from .errors import HTTPProblem, NoBackendAvailable
from .forward_http import SERVED_BY, forward_http
from .forward_ws import forward_websocket, is_websocket_upgrade
from .headers import ClientFacts
from .pages import PAGES, is_navigation, render_transition, setup_pages
from .workspace import Workspace

__all__ = ["PREFIX", "WORKSPACE", "make_public_app"]

PREFIX = "/__dumont"
WORKSPACE = web.AppKey("workspace", Workspace)


def _client_facts(request: web.Request, workspace: Workspace) -> ClientFacts:
    peer = request.remote
    trusted = bool(workspace.config.trusted_proxies) and ClientFacts.is_trusted(
        peer, workspace.config.trusted_proxies
    )
    return ClientFacts(peer, request.scheme, request.host, trusted)


async def forward(request: web.Request) -> web.StreamResponse:
    workspace = request.app[WORKSPACE]
    client = _client_facts(request, workspace)
    if is_websocket_upgrade(request):
        return await forward_websocket(request, workspace, client)
    started = time.perf_counter()
    status = 500
    response: web.StreamResponse | None = None
    # A page load with no backend ready gets the transition page at once (issue 3); API calls
    # wait for the switch to finish.
    wait = 0.0 if is_navigation(request) else workspace.config.switch_wait
    try:
        response = await forward_http(request, workspace, client, wait)
        status = response.status
        return response
    except HTTPProblem as problem:
        status = problem.status
        raise
    finally:
        sent = 0 if response is None else (response.content_length or response.body_length)
        workspace.traffic.request_done(
            request.get(SERVED_BY),
            request.method,
            status,
            time.perf_counter() - started,
            request.content.total_bytes,
            sent,
        )


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


def _problem_page(request: web.Request, problem: HTTPProblem) -> web.StreamResponse | None:
    """Navigations that find no backend see the transition page; everything else a short 503."""
    if isinstance(problem, NoBackendAvailable) and is_navigation(request):
        workspace = request.app[WORKSPACE]
        return render_transition(request, workspace, retry_after=problem.retry_after)
    return None


async def _close_websockets(app: web.Application) -> None:
    await app[WORKSPACE].close_websockets()


def make_public_app(workspace: Workspace) -> web.Application:
    app = web.Application(middlewares=[error_boundary], client_max_size=0)
    app[WORKSPACE] = workspace
    app.router.add_get(f"{PREFIX}/healthz", proxy_health)
    app.router.add_get(f"{PREFIX}/status", proxy_status)
    assets = workspace.config.assets_dir
    setup_pages(app, workspace, workspace.config.pages, assets / "templates", assets / "static")
    workspace.tips = app[PAGES].tip_book  # counted here, shown by /metrics and the dashboard
    app[RENDERER] = _problem_page
    app.router.add_route("*", "/{tail:.*}", forward)
    # Runs after the listener stopped accepting: 1001 tells browsers the proxy is going away.
    app.on_shutdown.append(_close_websockets)
    return app
