"""The proxy's admin API, as seen from provisioning (which never imports proxy/).

``PUT /admin/backends/{primary|standby}`` with ``{"url": ...}`` and a bearer token registers a new
backend, e.g. a replacement GPU after a spot interruption. ``PUT /admin/sync`` with ``{"state":
..., "lag_seconds": ...}`` tells the proxy (its dashboard, metrics and alerts) how the file sync is.

Issue 18's planned switches: ``POST /admin/failover`` / ``/admin/failback`` with ``{"reason":
"park: ..."}``, ``GET /admin/status`` polled until the proxy serves the wanted role, and ``PUT
/admin/park`` with the park's phase for the IDE notice, the dashboard and the metrics.

Issue 15's workspaces (one proxy, many pairs, routed by Host): ``GET /admin/workspaces``, ``GET``,
``PUT`` (create or replace: hosts, primary, standby, overrides) and ``DELETE
/admin/workspaces/{name}``. Every command above takes ``workspace=NAME`` to address
``/admin/workspaces/NAME/...`` instead of the ``default`` workspace's short form. The proxy
answers a refusal with ``{"error": ..., "detail": ...}``; the detail (one line naming the field)
is what the error carries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import quote

import httpx

from provisioning.errors import ProxyAdminError

__all__ = [
    "ParkPhase",
    "SyncState",
    "delete_workspace",
    "get_park",
    "get_workspace",
    "list_workspaces",
    "proxy_status",
    "put_workspace",
    "report_park",
    "report_sync",
    "set_backend",
    "switch",
    "wait_for",
]

SyncState = Literal["syncing", "fenced", "reverse_syncing", "degraded", "stopped"]
ParkPhase = Literal[
    "active", "idle", "parking", "parked", "resuming", "park_failed", "resume_failed"
]


async def set_backend(
    control_url: str,
    token: str,
    role: Literal["primary", "standby"],
    backend_url: str,
    *,
    workspace: str | None = None,
    timeout: float = 10.0,
) -> None:
    path = _scoped(f"/admin/backends/{role}", workspace)
    await _put(control_url, token, path, {"url": backend_url}, timeout)


async def report_sync(
    control_url: str,
    token: str,
    state: SyncState,
    lag_seconds: float | None = None,
    *,
    workspace: str | None = None,
    timeout: float = 10.0,
) -> None:
    body = {"state": state, "lag_seconds": lag_seconds}
    await _put(control_url, token, _scoped("/admin/sync", workspace), body, timeout)


async def report_park(
    control_url: str,
    token: str,
    phase: ParkPhase | None,
    *,
    workspace: str | None = None,
    timeout: float = 10.0,
    **fields: Any,
) -> None:
    """``PUT /admin/park``: ``detail``, ``idle_s``, ``park_in_s``, ``park_after_s``,
    ``gpu_per_hour``, ``resume_s``, ``outcome``, ``standby`` as the proxy documents them; phase
    None leaves the proxy's phase as it is (a report about the standby only)."""
    body = {k: v for k, v in {"phase": phase, **fields}.items() if v is not None}
    await _put(control_url, token, _scoped("/admin/park", workspace), body, timeout)


async def get_park(
    control_url: str, token: str, *, workspace: str | None = None, timeout: float = 10.0
) -> dict[str, Any]:
    return await _call("GET", control_url, token, _scoped("/admin/park", workspace), None, timeout)


async def proxy_status(
    control_url: str, token: str, *, workspace: str | None = None, timeout: float = 10.0
) -> dict[str, Any]:
    path = _scoped("/admin/status", workspace)
    return await _call("GET", control_url, token, path, None, timeout)


async def switch(
    control_url: str,
    token: str,
    to: Literal["standby", "primary"],
    reason: str,
    *,
    cause: Literal["park", "switchover", "resume"],
    workspace: str | None = None,
    timeout: float = 10.0,
) -> None:
    """Ask the proxy to fail over (to the standby) or back (to the primary): ``reason`` for
    people, ``cause`` as data (the proxy's metrics and hooks read it, never the reason)."""
    path = _scoped("/admin/failover" if to == "standby" else "/admin/failback", workspace)
    await _call("POST", control_url, token, path, {"reason": reason, "cause": cause}, timeout)


async def wait_for(
    control_url: str,
    token: str,
    what: str,
    ready: Callable[[dict[str, Any]], bool],
    *,
    timeout: float,
    interval: float = 0.2,
    workspace: str | None = None,
) -> dict[str, Any]:
    """Poll ``GET /admin/status`` until ``ready(status)`` is true; ProxyAdminError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        status = await proxy_status(control_url, token, workspace=workspace)
        if ready(status):
            return status
        if time.monotonic() > deadline:
            raise ProxyAdminError(
                f"the proxy did not {what} within {timeout:g} s (state {status.get('state')})"
            )
        await asyncio.sleep(interval)


async def list_workspaces(
    control_url: str, token: str, *, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Every workspace the proxy routes, ``default`` included."""
    try:
        data = await _call("GET", control_url, token, "/admin/workspaces", None, timeout)
    except ProxyAdminError as exc:
        if exc.status == 404:  # no such route: a proxy that serves one workspace only
            raise ProxyAdminError(
                f"the proxy at {control_url} has no workspaces API (a proxy from before issue"
                " 15): upgrade it, or leave out --hosts and base-domain",
                status=404,
            ) from exc
        raise
    workspaces = data.get("workspaces")
    if not isinstance(workspaces, list):
        raise ProxyAdminError(f"proxy admin API at {control_url}: no workspace list in the answer")
    return [w for w in workspaces if isinstance(w, dict)]


async def get_workspace(
    control_url: str, token: str, name: str, *, timeout: float = 10.0
) -> dict[str, Any] | None:
    """One workspace; None when the proxy does not know it."""
    try:
        return await _call("GET", control_url, token, _workspace_path(name), None, timeout)
    except ProxyAdminError as exc:
        if exc.status == 404:
            return None
        raise


async def put_workspace(
    control_url: str,
    token: str,
    name: str,
    *,
    hosts: list[str],
    primary: str,
    standby: str,
    overrides: dict[str, Any] | None = None,
    timeout: float = 10.0,
) -> tuple[dict[str, Any], bool]:
    """Create or replace a workspace; returns it as the proxy now has it, and whether it is new.
    The proxy keeps a replaced workspace's failover state when its backends are unchanged."""
    body: dict[str, Any] = {"hosts": hosts, "primary": primary, "standby": standby}
    if overrides:
        body["overrides"] = overrides
    data = await _call("PUT", control_url, token, _workspace_path(name), body, timeout)
    workspace = data.get("workspace")
    return (workspace if isinstance(workspace, dict) else {}), bool(data.get("created"))


async def delete_workspace(
    control_url: str, token: str, name: str, *, timeout: float = 10.0
) -> bool:
    """Remove a workspace (the proxy drains it); False when it was already gone."""
    try:
        await _call("DELETE", control_url, token, _workspace_path(name), None, timeout)
    except ProxyAdminError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _scoped(path: str, workspace: str | None) -> str:
    """A command's path for one workspace: ``/admin/X`` is the proxy's ``default`` workspace's,
    ``/admin/workspaces/NAME/X`` any named one's (issue 15)."""
    if workspace is None:
        return path
    return _workspace_path(workspace) + path.removeprefix("/admin")


def _workspace_path(name: str) -> str:
    # Names are checked before they get here (provisioning.workspace_registration); quoting
    # still keeps a bad one from turning into another path.
    return f"/admin/workspaces/{quote(name, safe='')}"


async def _put(
    control_url: str, token: str, path: str, body: dict[str, Any], timeout: float
) -> None:
    await _call("PUT", control_url, token, path, body, timeout)


async def _call(
    method: str,
    control_url: str,
    token: str,
    path: str,
    body: dict[str, Any] | None,
    timeout: float,
) -> dict[str, Any]:
    url = f"{control_url.rstrip('/')}{path}"
    # No token, no header: "Bearer " alone is not a valid header value, and a proxy whose
    # control listener has no token (loopback only) asks for none.
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.request(method, url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise ProxyAdminError(f"proxy admin API at {control_url} unreachable: {exc}") from exc
    if response.is_error:
        raise ProxyAdminError(
            f"proxy admin API refused {method} {path} (HTTP {response.status_code}):"
            f" {_refusal(response)}",
            status=response.status_code,
        )
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _refusal(response: httpx.Response) -> str:
    """The proxy's own words: the ``detail`` of its JSON problem, else the body's first line."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if isinstance(problem, dict) and (problem.get("detail") or problem.get("error")):
        return str(problem.get("detail") or problem.get("error")).strip()[:200]
    text = response.text.strip()
    return text.splitlines()[0][:200] if text else ""
