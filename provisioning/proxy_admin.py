"""The proxy's admin API, as seen from provisioning (which never imports proxy/).

``PUT /admin/backends/{primary|standby}`` with ``{"url": ...}`` and a bearer token registers a new
backend, e.g. a replacement GPU after a spot interruption. ``PUT /admin/sync`` with ``{"state":
..., "lag_seconds": ...}`` tells the proxy (its dashboard, metrics and alerts) how the file sync is.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx

from provisioning.errors import ProxyAdminError

__all__ = ["SyncState", "report_sync", "set_backend"]

SyncState = Literal["syncing", "fenced", "reverse_syncing", "degraded", "stopped"]


async def set_backend(
    control_url: str,
    token: str,
    role: Literal["primary", "standby"],
    backend_url: str,
    *,
    timeout: float = 10.0,
) -> None:
    await _put(control_url, token, f"/admin/backends/{role}", {"url": backend_url}, timeout)


async def report_sync(
    control_url: str,
    token: str,
    state: SyncState,
    lag_seconds: float | None = None,
    *,
    timeout: float = 10.0,
) -> None:
    body = {"state": state, "lag_seconds": lag_seconds}
    await _put(control_url, token, "/admin/sync", body, timeout)


async def _put(
    control_url: str, token: str, path: str, body: dict[str, Any], timeout: float
) -> None:
    url = f"{control_url.rstrip('/')}{path}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.put(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise ProxyAdminError(f"proxy admin API at {control_url} unreachable: {exc}") from exc
    if response.is_error:
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        raise ProxyAdminError(
            f"proxy admin API refused PUT {path} (HTTP {response.status_code}): {text}"
        )
