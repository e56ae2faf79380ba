"""The control listener: admin commands behind a bearer token (loopback by default).

``POST /admin/failover``, ``/admin/failback`` and ``/admin/switchover`` take an optional
``{"reason": ..., "cause": ...}``: the sentence for people, and the cause as data (admin,
switchover, park or resume; provisioning's planned switches send theirs). The hooks get it as
DUMONT_CAUSE, which is how the ``on_failover`` hook's ``pair gpu-lost`` tells a planned switch from
a lost GPU. A client that sends no cause gets the one its reason's prefix names ("park: ..."),
read here once (``cause_of``); nothing behind this module parses a reason.
The park routes (issue 18) are in ``proxy.park_status``'s docstring.

Many workspaces (issue 15): every command above also exists as /admin/workspaces/NAME/..., about
that workspace; the short forms are about the workspace named "default". ``GET
/admin/workspaces`` lists them, ``PUT /admin/workspaces/NAME`` with ``{"hosts": [...], "primary":
URL, "standby": URL, "overrides": {...}}`` creates or replaces one (400 with one line naming the
field, and nothing changed, for a bad document), ``DELETE`` drains one (its WebSockets closed with
1001, requests in flight finish). Changes persist in the state directory when there is one.

Who may ask: on the control listener, whoever holds the bearer token (``admin_token``). With
sign-in at the proxy (issue 17) the same app also answers on the public listener under
/__dumont/admin/ (proxy.auth.admin), for [auth] admins signed in with a browser; there the access
check is the session's, made by that surface's guard. Every handler asks ``ACCESS`` either way.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web
from yarl import URL

from .boundary import error_boundary
from .config import parse_backend_url
from .dashboard import ADMIN_EMAIL, add_routes
from .errors import BadRequest, ConfigError, Conflict, NotFound, Unauthorized
from .failover import Cause, Role
from .hooks import run_hook
from .public_app import SITES
from .sites import Site, Sites
from .workspace import Workspace

if TYPE_CHECKING:
    from .cluster.member import ClusterMember

__all__ = ["ACCESS", "AccessCheck", "make_control_app"]

log = logging.getLogger("dumont.park")

TOKEN = web.AppKey("admin_token", str)
AccessCheck = Callable[[web.Request], None]
# Raises Unauthorized (or another HTTPProblem) unless the request may use the control API.
ACCESS: web.AppKey[AccessCheck] = web.AppKey("access")
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


def _site(request: web.Request) -> Site:
    """The workspace a route is about: /admin/workspaces/NAME/..., else "default"."""
    return request.app[SITES].get(request.match_info.get("workspace", "default"))


def _check_token(request: web.Request) -> None:
    expected = request.app.get(TOKEN)
    if not expected:
        return  # loopback-only listener without a token (config refuses anything else)
    scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    # compare_digest: the time taken must not reveal how much of the token was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized()


def _allowed(request: web.Request) -> None:
    request.app[ACCESS](request)


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
    its reason's prefix names, else ``cause``; an empty body keeps both defaults. An admin's
    browser session (proxy.auth.admin) puts their address in the default reason: the switch
    record and the hooks' DUMONT_REASON say who pressed the button."""
    who = request.get(ADMIN_EMAIL)
    if who is not None:
        reason = f"{reason} by {who}"
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
    _allowed(request)
    workspace = _site(request).workspace
    reason, cause = await _command(request, "admin: failover requested", Cause.ADMIN)
    workspace.failover(reason, cause)
    return web.json_response(workspace.status())


async def failback(request: web.Request) -> web.Response:
    _allowed(request)
    workspace = _site(request).workspace
    reason, cause = await _command(request, "admin: failback requested", Cause.ADMIN)
    workspace.failback(reason, cause)
    return web.json_response(workspace.status())


async def switchover(request: web.Request) -> web.Response:
    """A planned switch to the standby: hooks.switchover (flush, verify, fence) first, and the
    switch only when it exited 0; without that hook a switch could lose the last second's files."""
    _allowed(request)
    workspace = _site(request).workspace
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
    lock = _site(request).switchover_lock
    if lock.locked():
        # Two flushes at once would stop and restart the GPU's lsyncd under each other.
        raise Conflict("a switchover is already running")
    async with lock:
        return await _switchover(workspace, command, reason, cause)


async def _switchover(
    workspace: Workspace, command: str, reason: str, cause: Cause
) -> web.Response:
    env = {
        "DUMONT_WORKSPACE": workspace.name,
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
    _allowed(request)
    actions = _site(request).park
    actions.resume()
    return web.json_response(actions.park.as_json(), status=202)


async def get_park(request: web.Request) -> web.Response:
    _allowed(request)
    return web.json_response(_site(request).board.park.as_json())


async def put_park(request: web.Request) -> web.Response:
    _allowed(request)
    park = _site(request).board.park
    park.report(await _json_body(request))
    return web.json_response(park.as_json())


async def keep_gpu(request: web.Request) -> web.Response:
    _allowed(request)
    actions = _site(request).park
    actions.keep()
    return web.json_response(actions.park.as_json())


async def put_backend(request: web.Request) -> web.Response:
    _allowed(request)
    role = request.match_info["role"]
    if role not in ("primary", "standby"):
        raise NotFound(f"no backend role {role!r}; use primary or standby")
    body = await _json_body(request)
    try:
        url: URL = parse_backend_url("url", body.get("url"))
    except ConfigError as exc:
        raise BadRequest(exc.problem) from None
    typed_role: Role = "primary" if role == "primary" else "standby"
    name = request.match_info.get("workspace", "default")
    site = await request.app[SITES].replace_backend(name, typed_role, url)
    return web.json_response(site.workspace.status())


async def status(request: web.Request) -> web.Response:
    _allowed(request)
    # The dashboard's state: the workspace's status plus sync, tips and savings.
    return web.json_response(_site(request).board.state())


async def list_workspaces(request: web.Request) -> web.Response:
    _allowed(request)
    return web.json_response({"workspaces": [site.describe() for site in request.app[SITES]]})


async def get_workspace(request: web.Request) -> web.Response:
    _allowed(request)
    return web.json_response(_site(request).describe())


async def put_workspace(request: web.Request) -> web.Response:
    _allowed(request)
    body = await _json_body(request)
    site, created = await request.app[SITES].put(request.match_info["workspace"], body)
    return web.json_response({"workspace": site.describe(), "created": created})


async def delete_workspace(request: web.Request) -> web.Response:
    _allowed(request)
    name = request.match_info["workspace"]
    await request.app[SITES].delete(name)
    return web.json_response({"deleted": name})


# The commands about one workspace: at /admin/... for "default", /admin/workspaces/NAME/... for any.
_COMMANDS = (
    ("POST", "/failover", failover),
    ("POST", "/failback", failback),
    ("PUT", "/backends/{role}", put_backend),
    ("GET", "/status", status),
    ("POST", "/switchover", switchover),
    ("POST", "/resume", resume),
    ("GET", "/park", get_park),
    ("PUT", "/park", put_park),
    ("POST", "/park/keep", keep_gpu),
)


def make_control_app(
    sites: Sites,
    *,
    root: str = "",
    access: AccessCheck | None = None,
    cluster: ClusterMember | None = None,
) -> web.Application:
    """The control API and the dashboard. ``root`` and ``access``: where the app is mounted and
    who may use it; the control listener's are "" and the bearer token. ``cluster``: this
    replica's membership (issue 16), for /admin/cluster and commands forwarded to the leader
    (sign-in's admin pages get those from proxy.server, behind their guard)."""
    app = web.Application(middlewares=[error_boundary])
    app[SITES] = sites
    app[ACCESS] = _check_token if access is None else access
    if sites.config.admin_token:
        app[TOKEN] = sites.config.admin_token
    for prefix in ("/admin", "/admin/workspaces/{workspace}"):
        for method, path, handler in _COMMANDS:
            app.router.add_route(method, prefix + path, handler)
    app.router.add_get("/admin/workspaces", list_workspaces)
    app.router.add_get("/admin/workspaces/{workspace}", get_workspace)
    app.router.add_put("/admin/workspaces/{workspace}", put_workspace)
    app.router.add_delete("/admin/workspaces/{workspace}", delete_workspace)
    # /metrics, /dashboard, PUT /admin/sync (and per workspace)
    add_routes(app, sites, sites.config.assets_dir, _allowed, root=root)
    if cluster is not None:
        from .cluster.routes import add_cluster_routes  # aiohttp's client, only for replicas

        add_cluster_routes(app, cluster)
    return app
