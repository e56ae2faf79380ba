"""The control listener's observability routes: /metrics, the dashboard, and PUT /admin/sync.

The dashboard's pages (issue 15):

    /dashboard                          the overview of every workspace when the proxy serves named
                                        ones (or none is "default"); else the "default" workspace's
                                        page, as a --primary/--standby proxy always had
    /dashboard/overview                 the overview's JSON (also /admin/overview, with the token)
    /dashboard/workspaces/NAME          one workspace's page; its buttons post to
                                        /admin/workspaces/NAME/...
    /dashboard/state, .../NAME/state    that page's JSON

Every URL a page carries starts with the app's ``ROOT``: "" on the control listener, and
/__dumont/admin on the public listener, where admins reach the same app with a browser session
(proxy.auth.admin). There the session's guard also hands the page its CSRF token (``CSRF_TOKEN``)
and who is signed in (``ADMIN_EMAIL``); the page's script sends the token back with every command
instead of a bearer token.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import jinja2
from aiohttp import hdrs, web

from proxy.errors import BadRequest, ConfigError, NotFound
from proxy.metrics import CONTENT_TYPE
from proxy.sync_report import SYNC_STATES, SyncReportState

from .board import Board
from .overview import ListedSite, OverviewQuery, cluster_card, overview

__all__ = [
    "ADMIN_EMAIL",
    "BOARDS",
    "CSRF_TOKEN",
    "ROOT",
    "BoardSource",
    "DashboardAssets",
    "add_routes",
    "shows_overview",
]

STATIC_FILES = ("dashboard.css", "dashboard.js", "dashboard_overview.js")
CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript"}


class BoardSource(Protocol):
    """Whose board a request reads (proxy.sites: one per workspace), every one's metrics, and
    every workspace for the overview."""

    def board_for(self, request: web.Request) -> Board: ...

    def render_metrics(self) -> bytes | None:
        """The Prometheus exposition, or None when metrics are off."""

    @property
    def named(self) -> bool:
        """Whether the proxy serves named workspaces ([workspaces.NAME], a state_dir)."""

    def __iter__(self) -> Iterator[ListedSite]: ...

    def cluster_status(self) -> dict[str, Any] | None:
        """The replicas (issue 16, proxy.cluster's status); None for a proxy that runs alone."""


BOARDS = web.AppKey("boards", BoardSource)
# Same-origin only: the page loads its CSS and JS from the listener and fetches its JSON there.
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"

TokenCheck = Callable[[web.Request], None]


@dataclass(frozen=True)
class DashboardAssets:
    """The page's template and files, read once at start-up so a broken install fails early."""

    template: jinja2.Template  # one workspace's page
    overview: jinja2.Template  # every workspace's row
    files: Mapping[str, bytes]
    version: str  # cache-busting: a hash of the files

    @classmethod
    def load(cls, assets_dir: Path) -> DashboardAssets:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(assets_dir / "templates"),
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
        )
        try:
            template = env.get_template("dashboard.html")
            overview_page = env.get_template("dashboard_overview.html")
            files = {name: (assets_dir / "static" / name).read_bytes() for name in STATIC_FILES}
        except (OSError, jinja2.TemplateError) as exc:
            raise ConfigError("assets_dir", f"dashboard assets missing: {exc}") from exc
        digest = hashlib.blake2b(b"".join(files.values()), digest_size=6).hexdigest()
        return cls(template, overview_page, files, digest)


ASSETS = web.AppKey("dashboard_assets", DashboardAssets)
ROOT = web.AppKey("dashboard_root", str)
# Set by the admin surface's guard (proxy.auth.admin) for a browser session; absent on the
# control listener, where the page's script asks for the bearer token instead.
CSRF_TOKEN = web.RequestKey("csrf_token", str)
ADMIN_EMAIL = web.RequestKey("admin_email", str)
# Rows a page of the overview shows unless asked for more: every poll carries and redraws its
# page, and a hundred rows is more than a screen.
PAGE = 100


async def metrics(request: web.Request) -> web.Response:
    body = request.app[BOARDS].render_metrics()
    if body is None:
        raise NotFound("metrics are off (metrics = false)")
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE})


def shows_overview(boards: BoardSource) -> bool:
    """Whether /dashboard is the overview: a proxy started with --primary/--standby alone keeps
    the one page it always had there."""
    return boards.named or not any(site.name == "default" for site in boards)


def _headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, hdrs.CACHE_CONTROL: "no-store"}


def _overview(request: web.Request, limit: int | None = None) -> dict[str, Any]:
    boards = request.app[BOARDS]
    query = OverviewQuery.from_query(request.query)
    if limit is not None and query.limit is None:
        query.limit = limit
    # The workspaces' clock: their switch records carry times from the event loop.
    found = overview(boards, asyncio.get_running_loop().time(), query)
    found["named_workspaces"] = shows_overview(boards)
    status = boards.cluster_status()
    found["cluster"] = None if status is None else cluster_card(status)
    root = request.app[ROOT]
    if root:
        for row in found["workspaces"]:
            row["url"] = root + row["url"]
    return found


async def dashboard_home(request: web.Request) -> web.Response:
    if not shows_overview(request.app[BOARDS]):
        return await dashboard(request)
    assets = request.app[ASSETS]
    # The first page arrives drawn, so the page is whole before its script runs (or without it).
    html = assets.overview.render(
        overview=_overview(request, PAGE), version=assets.version, root=request.app[ROOT]
    )
    return web.Response(text=html, content_type="text/html", headers=_headers())


async def dashboard(request: web.Request) -> web.Response:
    assets = request.app[ASSETS]
    boards = request.app[BOARDS]
    name = request.match_info.get("workspace")
    root = request.app[ROOT]
    html = assets.template.render(
        state=boards.board_for(request).state(),
        version=assets.version,
        root=root,
        # Where the page's script reads its state and sends its commands: the short forms are the
        # "default" workspace's, so a named workspace's page must name its own.
        state_url=root
        + ("/dashboard/state" if name is None else f"/dashboard/workspaces/{name}/state"),
        admin_base=root + ("/admin" if name is None else f"/admin/workspaces/{name}"),
        workspace=name,
        overview_url=root + "/dashboard" if name is not None and shows_overview(boards) else None,
        csrf_token=request.get(CSRF_TOKEN, ""),
        admin=request.get(ADMIN_EMAIL),
    )
    return web.Response(text=html, content_type="text/html", headers=_headers())


async def dashboard_state(request: web.Request) -> web.Response:
    return web.json_response(
        request.app[BOARDS].board_for(request).state(), headers={hdrs.CACHE_CONTROL: "no-store"}
    )


async def dashboard_overview(request: web.Request) -> web.Response:
    return web.json_response(_overview(request), headers={hdrs.CACHE_CONTROL: "no-store"})


def make_overview_handler(require_token: TokenCheck) -> Callable[[web.Request], Any]:
    async def admin_overview(request: web.Request) -> web.Response:
        require_token(request)
        return web.json_response(_overview(request))

    return admin_overview


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = request.app[ASSETS].files.get(name)
    if body is None:
        raise NotFound(f"no static file {name!r}")
    return web.Response(
        body=body,
        content_type=CONTENT_TYPES[Path(name).suffix],
        charset="utf-8",
        headers={hdrs.CACHE_CONTROL: "max-age=86400"},  # the page asks with ?v=<hash>
    )


def parse_sync_report(body: Any) -> tuple[SyncReportState, float | None]:
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    state = body.get("state")
    if state not in SYNC_STATES or state == "unknown":
        raise BadRequest(f"state must be one of {', '.join(SYNC_STATES[1:])}; got {state!r}")
    lag = body.get("lag_seconds")
    if lag is not None:
        if isinstance(lag, bool) or not isinstance(lag, int | float):
            raise BadRequest(f"lag_seconds must be a number or null; got {lag!r}")
        if not math.isfinite(lag) or lag < 0:
            raise BadRequest(f"lag_seconds must be finite and >= 0; got {lag!r}")
        lag = float(lag)
    return cast(SyncReportState, state), lag


def make_sync_handler(require_token: TokenCheck) -> Callable[[web.Request], Any]:
    async def put_sync(request: web.Request) -> web.Response:
        require_token(request)
        try:
            body = await request.json()
        except ValueError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from None
        state, lag = parse_sync_report(body)
        board = request.app[BOARDS].board_for(request)
        sync = board.sync
        if state != sync.state:
            board.log_sync_change(sync.state, state, lag)
        sync.state, sync.lag_seconds, sync.reported_at = state, lag, time.time()
        return web.json_response(sync.as_json())

    return put_sync


def add_routes(
    app: web.Application,
    boards: BoardSource,
    assets_dir: Path,
    require_token: TokenCheck,
    *,
    root: str = "",
) -> None:
    """The routes, for the default workspace, and for each workspace under /admin/workspaces/NAME
    (its sync report) and /dashboard/workspaces/NAME (its page and state). ``root``: the path the
    app is mounted at, which the pages' URLs start with."""
    app[BOARDS] = boards
    app[ROOT] = root
    app[ASSETS] = DashboardAssets.load(assets_dir)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/dashboard", dashboard_home)
    app.router.add_get("/dashboard/state", dashboard_state)
    app.router.add_get("/dashboard/overview", dashboard_overview)
    app.router.add_get("/admin/overview", make_overview_handler(require_token))
    app.router.add_get("/dashboard/static/{name}", static_file)
    put_sync = make_sync_handler(require_token)
    app.router.add_put("/admin/sync", put_sync)
    app.router.add_put("/admin/workspaces/{workspace}/sync", put_sync)
    app.router.add_get("/dashboard/workspaces/{workspace}", dashboard)
    app.router.add_get("/dashboard/workspaces/{workspace}/state", dashboard_state)
