"""The proxy's admin API, as seen from provisioning (which never imports proxy/).

``PUT /admin/backends/{primary|standby}`` with ``{"url": ...}`` and a bearer token registers a new
backend, e.g. a replacement GPU after a spot interruption.
"""

from __future__ import annotations

from typing import Literal

import httpx

from provisioning.errors import ProxyAdminError

__all__ = ["set_backend"]


async def set_backend(
    control_url: str,
    token: str,
    role: Literal["primary", "standby"],
    backend_url: str,
    *,
    timeout: float = 10.0,
) -> None:
    url = f"{control_url.rstrip('/')}/admin/backends/{role}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.put(url, json={"url": backend_url}, headers=headers)
    except httpx.HTTPError as exc:
        raise ProxyAdminError(f"proxy admin API at {control_url} unreachable: {exc}") from exc
    if response.is_error:
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        raise ProxyAdminError(
            f"proxy admin API refused the new {role} (HTTP {response.status_code}): {text}"
        )
