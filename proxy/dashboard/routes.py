"""The control listener's observability routes: /metrics, the dashboard, and PUT /admin/sync."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast, get_args

import jinja2
from aiohttp import hdrs, web

from proxy.errors import BadRequest, NotFound
from proxy.metrics import CONTENT_TYPE, SyncState

from .board import Board

__all__ = ["BOARD", "STATIC_DIR", "TEMPLATE_DIR", "add_routes"]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"
STATIC_FILES = frozenset({"dashboard.css", "dashboard.js"})
BOARD = web.AppKey("board", Board)
# Same-origin only: the page loads its CSS and JS from the listener and fetches its JSON there.
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)

TokenCheck = Callable[[web.Request], None]


async def metrics(request: web.Request) -> web.Response:
    board = request.app[BOARD]
    if board.metrics is None:
        raise NotFound("metrics are off (metrics = false)")
    return web.Response(body=board.metrics.render(), headers={hdrs.CONTENT_TYPE: CONTENT_TYPE})


async def dashboard(request: web.Request) -> web.Response:
    board = request.app[BOARD]
    html = _templates.get_template("dashboard.html").render(
        state=board.state(), version=_asset_version()
    )
    return web.Response(
        text=html,
        content_type="text/html",
        headers={"Content-Security-Policy": CSP, hdrs.CACHE_CONTROL: "no-store"},
    )


def _asset_version() -> str:
    """Cache-busting: the newest mtime of the page's assets."""
    stamps = (int((STATIC_DIR / name).stat().st_mtime) for name in STATIC_FILES)
    return str(max(stamps, default=0))


async def dashboard_state(request: web.Request) -> web.Response:
    return web.json_response(request.app[BOARD].state(), headers={hdrs.CACHE_CONTROL: "no-store"})


async def static_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise NotFound(f"no static file {name!r}")
    return web.FileResponse(STATIC_DIR / name, headers={hdrs.CACHE_CONTROL: "max-age=3600"})


def parse_sync_report(body: Any) -> tuple[SyncState, float | None]:
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    state = body.get("state")
    states = get_args(SyncState)
    if state not in states or state == "unknown":
        raise BadRequest(f"state must be one of {', '.join(states[1:])}; got {state!r}")
    lag = body.get("lag_seconds")
    if lag is not None:
        if isinstance(lag, bool) or not isinstance(lag, int | float):
            raise BadRequest(f"lag_seconds must be a number or null; got {lag!r}")
        if not math.isfinite(lag) or lag < 0:
            raise BadRequest(f"lag_seconds must be finite and >= 0; got {lag!r}")
        lag = float(lag)
    return cast(SyncState, state), lag


def make_sync_handler(require_token: TokenCheck) -> Callable[[web.Request], Any]:
    async def put_sync(request: web.Request) -> web.Response:
        require_token(request)
        try:
            body = await request.json()
        except ValueError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from None
        state, lag = parse_sync_report(body)
        board = request.app[BOARD]
        sync = board.sync
        if state != sync.state:
            board.log_sync_change(sync.state, state, lag)
        sync.state, sync.lag_seconds, sync.reported_at = state, lag, time.time()
        return web.json_response(sync.as_json())

    return put_sync


def add_routes(app: web.Application, board: Board, require_token: TokenCheck) -> None:
    app[BOARD] = board
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/dashboard", dashboard)
    app.router.add_get("/dashboard/state", dashboard_state)
    app.router.add_get("/dashboard/static/{name}", static_file)
    app.router.add_put("/admin/sync", make_sync_handler(require_token))
