"""The control listener: admin commands behind a bearer token (loopback by default)."""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import hdrs, web
from yarl import URL

from .boundary import error_boundary
from .config import parse_backend_url
from .dashboard import BOARD, Board, add_routes
from .errors import BadRequest, ConfigError, NotFound, Unauthorized
from .failover import Role
from .public_app import WORKSPACE
from .workspace import Workspace

__all__ = ["make_control_app"]

TOKEN = web.AppKey("admin_token", str)


def _check_token(request: web.Request) -> None:
    expected = request.app.get(TOKEN)
    if not expected:
        return  # loopback-only listener without a token (config refuses anything else)
    scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    # compare_digest: the time taken must not reveal how much of the token was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized()


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


async def failover(request: web.Request) -> web.Response:
    _check_token(request)
    workspace = request.app[WORKSPACE]
    workspace.failover()
    return web.json_response(workspace.status())


async def failback(request: web.Request) -> web.Response:
    _check_token(request)
    workspace = request.app[WORKSPACE]
    workspace.failback()
    return web.json_response(workspace.status())


async def put_backend(request: web.Request) -> web.Response:
    _check_token(request)
    role = request.match_info["role"]
    if role not in ("primary", "standby"):
        raise NotFound(f"no backend role {role!r}; use primary or standby")
    body = await _json_body(request)
    try:
        url: URL = parse_backend_url("url", body.get("url"))
    except ConfigError as exc:
        raise BadRequest(exc.problem) from None
    workspace = request.app[WORKSPACE]
    typed_role: Role = "primary" if role == "primary" else "standby"
    await workspace.replace_backend(typed_role, url)
    return web.json_response(workspace.status())


async def status(request: web.Request) -> web.Response:
    _check_token(request)
    # The dashboard's state: the workspace's status plus sync, tips and savings.
    return web.json_response(request.app[BOARD].state())


def make_control_app(workspace: Workspace, board: Board) -> web.Application:
    app = web.Application(middlewares=[error_boundary])
    app[WORKSPACE] = workspace
    if workspace.config.admin_token:
        app[TOKEN] = workspace.config.admin_token
    app.router.add_post("/admin/failover", failover)
    app.router.add_post("/admin/failback", failback)
    app.router.add_put("/admin/backends/{role}", put_backend)
    app.router.add_get("/admin/status", status)
    add_routes(app, board, _check_token)  # /metrics, /dashboard, PUT /admin/sync
    return app
