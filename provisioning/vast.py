"""An async client for Vast.ai's REST API: the GPU half of a pair.

Endpoints (Vast.ai API v0, ``Authorization: Bearer KEY``):

- ``GET    /api/v0/bundles/?q=<json>``  search offers  -> ``{"offers": [...]}``
- ``PUT    /api/v0/asks/{offer_id}/``   rent an offer  -> ``{"success": true, "new_contract": ID}``
- ``GET    /api/v0/instances/``         list instances -> ``{"instances": [...]}``
- ``GET    /api/v0/instances/{id}/``    show instance  -> ``{"instances": {...}}``
- ``DELETE /api/v0/instances/{id}/``    destroy        -> ``{"success": true}``
- ``PUT    /api/v0/instances/{id}/``    ``{"state": "stopped"|"running"}``: stop keeps the disk and
  bills no GPU, start asks for the same machine back -> ``{"success": true}``

Errors come back as ``{"success": false, "error": CODE, "msg": TEXT}``; the text is kept in the
exception. Rate limits (429) and connection failures before the request was sent are retried for
every call; 5xx and timeouts only for the idempotent ones (GET, DELETE), because a PUT that timed
out may have rented the machine: the pairing layer finds it by label rather than rent another.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import httpx

from provisioning.errors import (
    CloudAuthError,
    CloudError,
    CloudNotFound,
    CloudQuotaError,
    CloudTransientError,
)
from provisioning.retry import RetryPolicy  # the clients' one policy; re-exported for callers

__all__ = [
    "DEFAULT_VAST_URL",
    "InstanceRequest",
    "RetryPolicy",
    "VastClient",
    "VastInstance",
    "VastOffer",
]

DEFAULT_VAST_URL = "https://console.vast.ai"

# Vast's actual_status values that mean the machine is gone for now (spot interruption, host
# offline): the pair keeps its standby and is marked degraded.
LOST_STATES = frozenset({"exited", "offline", "stopped", "unknown"})
_IDEMPOTENT = frozenset({"GET", "DELETE"})
_QUOTA_WORDS = ("quota", "insufficient", "balance", "credit", "limit exceeded")


@dataclass(frozen=True)
class VastOffer:
    id: int
    gpu_name: str
    num_gpus: int
    dph_total: float
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VastOffer:
        return cls(
            id=int(data["id"]),
            gpu_name=str(data.get("gpu_name", "")),
            num_gpus=int(data.get("num_gpus") or 0),
            dph_total=float(data.get("dph_total") or 0.0),
            raw=data,
        )


@dataclass(frozen=True)
class VastInstance:
    id: int
    label: str
    actual_status: str
    ssh_host: str
    ssh_port: int
    public_ip: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def lost(self) -> bool:
        """True when the machine is interrupted or offline (not when it is still booting)."""
        return self.actual_status in LOST_STATES

    @property
    def running(self) -> bool:
        return self.actual_status == "running"

    def host_port(self, container_port: int) -> int | None:
        """The public port Docker mapped to ``container_port``/tcp, if any."""
        ports = self.raw.get("ports") or {}
        mappings = ports.get(f"{container_port}/tcp") if isinstance(ports, Mapping) else None
        if not mappings:
            return None
        return int(mappings[0]["HostPort"])

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VastInstance:
        return cls(
            id=int(data["id"]),
            label=str(data.get("label") or ""),
            # actual_status is null while the host provisions the container.
            actual_status=str(data.get("actual_status") or "provisioning"),
            ssh_host=str(data.get("ssh_host") or ""),
            ssh_port=int(data.get("ssh_port") or 0),
            public_ip=str(data.get("public_ipaddr") or "").strip(),
            raw=data,
        )


@dataclass(frozen=True)
class InstanceRequest:
    """What to run on a rented offer."""

    image: str
    disk_gb: float
    label: str
    onstart: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    price: float | None = None  # a bid makes it interruptible; None rents on demand

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "client_id": "me",
            "image": self.image,
            "disk": self.disk_gb,
            "label": self.label,
            "env": dict(self.env),
            "onstart": self.onstart,
            "runtype": "ssh",
        }
        if self.price is not None:
            body["price"] = self.price
        return body


class VastClient:
    """One authenticated session with Vast.ai; use as ``async with VastClient(key) as vast``."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_VAST_URL,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def search_offers(self, query: Mapping[str, Any], *, limit: int = 20) -> list[VastOffer]:
        """Offers matching ``query`` (Vast's search JSON), cheapest first."""
        q = {"rentable": {"eq": True}, **query, "order": [["dph_total", "asc"]], "limit": limit}
        data = await self._call("GET", "/api/v0/bundles/", params={"q": json.dumps(q)})
        offers = [VastOffer.from_json(o) for o in data.get("offers", [])]
        return sorted(offers, key=lambda o: o.dph_total)

    async def create_instance(self, offer_id: int, request: InstanceRequest) -> int:
        """Rent ``offer_id``; returns the new instance id (Vast calls it the contract)."""
        data = await self._call("PUT", f"/api/v0/asks/{offer_id}/", json=request.to_json())
        if not data.get("success") or "new_contract" not in data:
            raise CloudError(f"vast: renting offer {offer_id} failed: {_message(data)}")
        return int(data["new_contract"])

    async def show_instance(self, instance_id: int) -> VastInstance:
        data = await self._call("GET", f"/api/v0/instances/{instance_id}/")
        body = data.get("instances")
        if not isinstance(body, Mapping) or "id" not in body:
            raise CloudNotFound(f"vast: instance {instance_id} not found", status=404)
        return VastInstance.from_json(body)

    async def list_instances(self, *, label_prefix: str = "") -> list[VastInstance]:
        data = await self._call("GET", "/api/v0/instances/")
        instances = [VastInstance.from_json(i) for i in data.get("instances", [])]
        return [i for i in instances if i.label.startswith(label_prefix)]

    async def destroy_instance(self, instance_id: int) -> None:
        await self._call("DELETE", f"/api/v0/instances/{instance_id}/")

    async def set_instance_state(self, instance_id: int, state: str) -> None:
        """Stop (``"stopped"``) or start (``"running"``) an instance; the disk is kept."""
        data = await self._call("PUT", f"/api/v0/instances/{instance_id}/", json={"state": state})
        if not data.get("success"):
            message = _message(data)
            raise CloudError(f"vast: setting instance {instance_id} {state} failed: {message}")

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        last: CloudError | None = None
        for attempt in range(self._retry.attempts):
            if attempt:
                await asyncio.sleep(self._retry.delay(attempt))
            try:
                response = await self._http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                last = CloudTransientError(f"vast: {method} {path}: cannot connect: {exc}")
                continue  # nothing reached the server: always safe to retry
            except httpx.TransportError as exc:
                last = CloudTransientError(f"vast: {method} {path}: {type(exc).__name__}: {exc}")
                if method in _IDEMPOTENT:
                    continue
                raise last from exc
            if response.status_code == 429 or (
                response.status_code >= 500 and method in _IDEMPOTENT
            ):
                last = _error_for(method, path, response)
                continue
            if response.is_error:
                raise _error_for(method, path, response)
            return _json_body(method, path, response)
        assert last is not None
        raise last


def _json_body(method: str, path: str, response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as exc:
        raise CloudError(f"vast: {method} {path}: answer is not JSON") from exc
    if not isinstance(data, dict):
        raise CloudError(f"vast: {method} {path}: answer is not a JSON object")
    return data


def _message(data: Mapping[str, Any]) -> str:
    parts = [str(data[k]) for k in ("error", "msg") if data.get(k)]
    return ": ".join(parts) or "no message"


def _error_for(method: str, path: str, response: httpx.Response) -> CloudError:
    try:
        body = response.json()
        text = _message(body) if isinstance(body, Mapping) else response.text
    except ValueError:
        text = response.text.strip()[:200] or response.reason_phrase
    status = response.status_code
    message = f"vast: {method} {path}: HTTP {status}: {text}"
    if status in (401, 403):
        return CloudAuthError(message, status=status)
    if status == 404:
        return CloudNotFound(message, status=status)
    if status == 402 or any(word in text.lower() for word in _QUOTA_WORDS):
        return CloudQuotaError(message, status=status)
    if status == 429 or status >= 500:
        return CloudTransientError(message, status=status)
    return CloudError(message, status=status)
