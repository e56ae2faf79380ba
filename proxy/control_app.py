"""The control listener: admin commands behind a bearer token (loopback by default).

``POST /admin/failover``, ``/admin/failback`` and ``/admin/switchover`` take an optional
``{"reason": ..., "cause": ...}``: the sentence for people, and the cause as data (admin,
switchover, park or resume; provisioning's planned switches send theirs). The hooks get it as
DUMONT_CAUSE, which is how the ``on_failover`` hook's ``pair gpu-lost`` tells a planned switch from
a lost GPU. A client that sends no cause gets the one its reason's prefix names ("park: ..."),
read here once (``cause_of``); nothing behind this module parses a reason.
The park routes (issue 18) are in ``proxy.park_status``'s docstring.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from aiohttp import hdrs, web
from yarl import URL

from .boundary import error_boundary
from .config import parse_backend_url
from .dashboard import BOARD, Board, add_routes
from .errors import BadRequest, ConfigError, Conflict, NotFound, Unauthorized
from .failover import Cause, Role
from .hooks import run_hook
from .park_actions import ParkActions
from .park_status import ParkStatus
from .public_app import WORKSPACE
from .workspace import Workspace

__all__ = ["make_control_app"]

log = logging.getLogger("dumont.park")

TOKEN = web.AppKey("admin_token", str)
PARK = web.AppKey("park", ParkStatus)
PARK_ACTIONS = web.AppKey("park_actions", ParkActions)
SWITCHOVER = web.AppKey("switchover_lock", asyncio.Lock)
REASON_LIMIT = 200
# The reason prefixes of provisioning's planned switches (provisioning.parking), as causes.
PLANNED_CAUSES = {"park:": Cause.PARK, "switchover:": Cause.SWITCHOVER, "resume:": Cause.RESUME}
# What a command may say it is, in its body's "cause" (provisioning says park, switchover, resume).
COMMAND_CAUSES = frozenset({Cause.ADMIN, Cause.SWITCHOVER, Cause.PARK, Cause.RESUME})


def cause_of(reason: str, default: Cause) -> Cause:
    """The cause a command's reason names by its prefix; ``default`` when it names none. Only for
    clients that send no ``cause`` (provisioning before it sent one)."""
    prefix, colon, _ = reason.partition(":")
    return PLANNED_CAUSES.get(prefix + colon, default) if colon else default


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


async def _command(request: web.Request, reason: str, cause: Cause) -> tuple[str, Cause]:
    """The optional ``{"reason": ..., "cause": ...}`` of an admin command: the sentence for
    people, and the cause as data (one of COMMAND_CAUSES). A body without a cause gets the one
    its reason's prefix names, else ``cause``; an empty body keeps both defaults."""
    if not request.can_read_body:
        return reason, cause
    body = await _json_body(request)
    given = body.get("reason", reason)
    if not isinstance(given, str) or not given.strip():
        raise BadRequest("reason must be a non-empty string")
    reason = " ".join(given.split())[:REASON_LIMIT]
    named = body.get("cause")
    if named is None:
        return reason, cause_of(reason, cause)
    if named not in COMMAND_CAUSES:
        allowed = ", ".join(sorted(COMMAND_CAUSES))
        raise BadRequest(f"cause must be one of {allowed}, not {str(named)[:40]!r}")
    return reason, Cause(named)


async def failover(request: web.Request) -> web.Response:
    _check_token(request)
    workspace = request.app[WORKSPACE]
    reason, cause = await _command(request, "admin: failover requested", Cause.ADMIN)
    workspace.failover(reason, cause)
    return web.json_response(workspace.status())


async def failback(request: web.Request) -> web.Response:
    _check_token(request)
    workspace = request.app[WORKSPACE]
    reason, cause = await _command(request, "admin: failback requested", Cause.ADMIN)
    workspace.failback(reason, cause)
    return web.json_response(workspace.status())


async def switchover(request: web.Request) -> web.Response:
    """A planned switch to the standby: hooks.switchover (flush, verify, fence) first, and the
    switch only when it exited 0; without that hook a switch could lose the last second's files."""
    _check_token(request)
    workspace = request.app[WORKSPACE]
    reason, cause = await _command(request, "switchover: requested", Cause.SWITCHOVER)
    if cause is not Cause.PARK:
        cause = Cause.SWITCHOVER  # what this endpoint does, whatever else the reason says
    if not reason.startswith(("switchover:", "park:")):
        reason = f"{cause}: {reason}"
    command = workspace.config.hooks.switchover
    if command is None:
        raise Conflict("no switchover hook configured ([hooks] switchover)")
    if workspace.machine.state != "serving_primary":
        raise Conflict(f"switchover needs state serving_primary, not {workspace.machine.state}")
    lock = request.app[SWITCHOVER]
    if lock.locked():
        # Two flushes at once would stop and restart the GPU's lsyncd under each other.
        raise Conflict("a switchover is already running")
    async with lock:
        return await _switchover(workspace, command, reason, cause)


async def _switchover(
    workspace: Workspace, command: str, reason: str, cause: Cause
) -> web.Response:
    env = {
        "DUMONT_EVENT": "switchover",
        "DUMONT_REASON": reason,
        "DUMONT_CAUSE": cause,
        "DUMONT_PRIMARY_URL": str(workspace.backends["primary"].url),
        "DUMONT_STANDBY_URL": str(workspace.backends["standby"].url),
    }
    outcome = await run_hook(command, env, workspace.config.hooks.timeout)
    if not outcome.ok:
        # The GPU keeps serving: nothing moved, and the hook's last line says why.
        raise Conflict(f"switchover hook failed, the primary keeps serving: {outcome.detail}")
    workspace.failover(reason, cause)
    return web.json_response(workspace.status())


async def resume(request: web.Request) -> web.Response:
    """Bring a parked GPU back (the dashboard's button): hooks.resume runs in the background,
    reporting its progress with PUT /admin/park; 202 at once."""
    _check_token(request)
    actions = request.app[PARK_ACTIONS]
    actions.resume()
    return web.json_response(actions.park.as_json(), status=202)


async def get_park(request: web.Request) -> web.Response:
    _check_token(request)
    return web.json_response(request.app[PARK].as_json())


async def put_park(request: web.Request) -> web.Response:
    _check_token(request)
    park = request.app[PARK]
    park.report(await _json_body(request))
    return web.json_response(park.as_json())


async def keep_gpu(request: web.Request) -> web.Response:
    _check_token(request)
    actions = request.app[PARK_ACTIONS]
    actions.keep()
    return web.json_response(actions.park.as_json())


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


def make_control_app(
    workspace: Workspace, board: Board, park_actions: ParkActions
) -> web.Application:
    app = web.Application(middlewares=[error_boundary])
    app[WORKSPACE] = workspace
    if workspace.config.admin_token:
        app[TOKEN] = workspace.config.admin_token
    app.router.add_post("/admin/failover", failover)
    app.router.add_post("/admin/failback", failback)
    app.router.add_put("/admin/backends/{role}", put_backend)
    app.router.add_get("/admin/status", status)
    app.router.add_post("/admin/switchover", switchover)
    app.router.add_post("/admin/resume", resume)
    app.router.add_get("/admin/park", get_park)
    app.router.add_put("/admin/park", put_park)
    app.router.add_post("/admin/park/keep", keep_gpu)
    add_routes(app, board, _check_token)  # /metrics, /dashboard, PUT /admin/sync
    app[PARK] = board.park
    app[PARK_ACTIONS] = park_actions
    app[SWITCHOVER] = asyncio.Lock()
    return app
