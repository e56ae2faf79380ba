"""The control listener's observability routes: /metrics, the dashboard, and PUT /admin/sync."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import jinja2
from aiohttp import hdrs, web

from proxy.errors import BadRequest, ConfigError, NotFound
from proxy.metrics import CONTENT_TYPE
from proxy.sync_report import SYNC_STATES, SyncReportState

from .board import Board

__all__ = ["BOARDS", "BoardSource", "DashboardAssets", "add_routes"]

STATIC_FILES = ("dashboard.css", "dashboard.js")
CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript"}


class BoardSource(Protocol):
    """Whose board a request reads (proxy.sites: one per workspace), and every one's metrics."""

    def board_for(self, request: web.Request) -> Board: ...

    def render_metrics(self) -> bytes | None:
        """The Prometheus exposition, or None when metrics are off."""


BOARDS = web.AppKey("boards", BoardSource)
# Same-origin only: the page loads its CSS and JS from the listener and fetches its JSON there.
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"

TokenCheck = Callable[[web.Request], None]


@dataclass(frozen=True)
class DashboardAssets:
    """The page's template and files, read once at start-up so a broken install fails early."""

    template: jinja2.Template
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
            files = {name: (assets_dir / "static" / name).read_bytes() for name in STATIC_FILES}
        except (OSError, jinja2.TemplateError) as exc:
            raise ConfigError("assets_dir", f"dashboard assets missing: {exc}") from exc
        digest = hashlib.blake2b(b"".join(files.values()), digest_size=6).hexdigest()
        return cls(template, files, digest)


ASSETS = web.AppKey("dashboard_assets", DashboardAssets)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[BOARDS].render_metrics()
    if body is None:
        raise NotFound("metrics are off (metrics = false)")
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE})


async def dashboard(request: web.Request) -> web.Response:
    assets = request.app[ASSETS]
    html = assets.template.render(
        state=request.app[BOARDS].board_for(request).state(), version=assets.version
    )
    return web.Response(
        text=html,
        content_type="text/html",
        headers={"Content-Security-Policy": CSP, hdrs.CACHE_CONTROL: "no-store"},
    )


async def dashboard_state(request: web.Request) -> web.Response:
    return web.json_response(
        request.app[BOARDS].board_for(request).state(), headers={hdrs.CACHE_CONTROL: "no-store"}
    )


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
    app: web.Application, boards: BoardSource, assets_dir: Path, require_token: TokenCheck
) -> None:
    """The routes, for the default workspace, and for each workspace under /admin/workspaces/NAME
    (its sync report) and /dashboard/workspaces/NAME (its page and state)."""
    app[BOARDS] = boards
    app[ASSETS] = DashboardAssets.load(assets_dir)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/dashboard", dashboard)
    app.router.add_get("/dashboard/state", dashboard_state)
    app.router.add_get("/dashboard/static/{name}", static_file)
    put_sync = make_sync_handler(require_token)
    app.router.add_put("/admin/sync", put_sync)
    app.router.add_put("/admin/workspaces/{workspace}/sync", put_sync)
    app.router.add_get("/dashboard/workspaces/{workspace}", dashboard)
    app.router.add_get("/dashboard/workspaces/{workspace}/state", dashboard_state)
