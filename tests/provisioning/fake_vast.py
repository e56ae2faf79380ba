"""A Vast.ai API on loopback that speaks the documented v0 wire format.

Enough of the API for the real VastClient: offers search (``GET /api/v0/bundles/?q=``), renting
(``PUT /api/v0/asks/{id}/``), listing, showing and destroying instances. Faults can be injected per
route (HTTP status, slow answer) and a route can be made to hang, so a test can kill the client at a
precise step.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.provisioning.injection import FaultInjection

API_KEY = "test-vast-key"


@dataclass
class Fault:
    method: str
    pattern: str  # regex on the path
    status: int = 500
    delay: float = 0.0
    times: int = 1
    body: dict[str, Any] = field(
        default_factory=lambda: {"success": False, "error": "server_error", "msg": "injected"}
    )


class FakeVast(FaultInjection[Fault]):
    def __init__(
        self,
        *,
        ssh_host: str = "127.0.0.1",
        ssh_port: int = 22,
        boot_polls: int = 1,
        boot_seconds: float = 0.0,
    ) -> None:
        super().__init__()
        self.offers: list[dict[str, Any]] = [
            {
                "id": 9001,
                "gpu_name": "RTX_4090",
                "num_gpus": 1,
                "dph_total": 0.42,
                "rentable": True,
            },
            {
                "id": 9002,
                "gpu_name": "RTX_4090",
                "num_gpus": 1,
                "dph_total": 0.31,
                "rentable": True,
            },
            {
                "id": 9003,
                "gpu_name": "A100_SXM4",
                "num_gpus": 1,
                "dph_total": 1.10,
                "rentable": True,
            },
        ]
        self.instances: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.created_bodies: list[dict[str, Any]] = []
        self.ssh_host = ssh_host
        self.ssh_port = ssh_port
        self.boot_polls = boot_polls
        self.boot_seconds = boot_seconds  # the provider's own boot time, for benchmarks
        self.code_server_port = 18080  # the host port Docker maps to a GPU's 8080/tcp
        self._next_id = 5000

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/api/v0/bundles/", self._search)
        app.router.add_put("/api/v0/asks/{offer}/", self._rent)
        app.router.add_get("/api/v0/instances/", self._list)
        app.router.add_get("/api/v0/instances/{id}/", self._show)
        app.router.add_delete("/api/v0/instances/{id}/", self._destroy)
        app.router.add_put("/api/v0/instances/{id}/", self._manage)
        return app

    def set_status(self, instance_id: int, status: str) -> None:
        self.instances[instance_id]["actual_status"] = status

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return web.json_response(
                {"success": False, "error": "auth_error", "msg": "Invalid user key"}, status=401
            )
        fault = await self.injected(request)
        if fault:
            return web.json_response(fault.body, status=fault.status)
        response: web.StreamResponse = await handler(request)
        return response

    async def _search(self, request: web.Request) -> web.Response:
        query = json.loads(request.query.get("q", "{}"))
        offers = [o for o in self.offers if _matches(o, query)]
        offers.sort(key=lambda o: o["dph_total"])
        return web.json_response({"offers": offers[: int(query.get("limit", 64))]})

    async def _rent(self, request: web.Request) -> web.Response:
        offer_id = int(request.match_info["offer"])
        if not any(o["id"] == offer_id for o in self.offers):
            return web.json_response(
                {
                    "success": False,
                    "error": "no_such_ask",
                    "msg": f"Instance type {offer_id} is no longer available.",
                },
                status=404,
            )
        body = await request.json()
        self.created_bodies.append(body)
        offer = next(o for o in self.offers if o["id"] == offer_id)
        self._next_id += 1
        self.instances[self._next_id] = {
            "id": self._next_id,
            "label": body.get("label"),
            "image_uuid": body.get("image"),
            "actual_status": None,
            "intended_status": "running",
            "ssh_host": self.ssh_host,
            "ssh_port": self.ssh_port,
            "public_ipaddr": "127.0.0.1",
            "ports": {"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(self.code_server_port)}]},
            "dph_total": offer["dph_total"],
            "_polls": 0,
            "_booted_at": time.monotonic() + self.boot_seconds,
        }
        return web.json_response({"success": True, "new_contract": self._next_id})

    def _visible(self, instance: dict[str, Any]) -> dict[str, Any]:
        # A machine boots: null (provisioning), loading, then running after boot_polls looks.
        if instance["actual_status"] in (None, "loading"):
            instance["_polls"] += 1
            booted = instance["_polls"] > self.boot_polls
            booted = booted and time.monotonic() >= instance["_booted_at"]
            instance["actual_status"] = "running" if booted else "loading"
        return {k: v for k, v in instance.items() if not k.startswith("_")}

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"instances": [self._visible(i) for i in self.instances.values()]})

    async def _show(self, request: web.Request) -> web.Response:
        instance = self.instances.get(int(request.match_info["id"]))
        if instance is None:
            return web.json_response(
                {"success": False, "error": "no_such_instance", "msg": "Instance not found"},
                status=404,
            )
        return web.json_response({"instances": self._visible(instance)})

    async def _destroy(self, request: web.Request) -> web.Response:
        if self.instances.pop(int(request.match_info["id"]), None) is None:
            return web.json_response(
                {"success": False, "error": "no_such_instance", "msg": "Instance not found"},
                status=404,
            )
        return web.json_response({"success": True})

    async def _manage(self, request: web.Request) -> web.Response:
        instance = self.instances.get(int(request.match_info["id"]))
        if instance is None:
            return web.json_response(
                {"success": False, "error": "no_such_instance", "msg": "Instance not found"},
                status=404,
            )
        state = (await request.json()).get("state")
        if state not in ("running", "stopped"):
            return web.json_response(
                {"success": False, "error": "invalid_args", "msg": f"bad state {state!r}"},
                status=400,
            )
        instance["intended_status"] = state
        # A started machine boots again (loading, then running); a stop takes effect at once.
        instance["actual_status"] = "loading" if state == "running" else "stopped"
        instance["_polls"] = 0
        instance["_booted_at"] = time.monotonic() + self.boot_seconds
        return web.json_response({"success": True})


def _matches(offer: dict[str, Any], query: dict[str, Any]) -> bool:
    for key, condition in query.items():
        if key in ("order", "limit", "type") or not isinstance(condition, dict):
            continue
        value = offer.get(key)
        for op, wanted in condition.items():
            if op == "eq" and value != wanted:
                return False
            if op == "lte" and (value is None or value > wanted):
                return False
            if op == "gte" and (value is None or value < wanted):
                return False
    return True
