"""A Compute Engine API on loopback: the REST wire format google-cloud-compute speaks.

Instances (insert, get, list with a ``labels.KEY = "VALUE"`` filter, start, delete, and
getGuestAttributes: what a VM wrote through its metadata server, ``guest_attributes``) and zonal
operations (get, wait). Operations are DONE at once by default; ``pending_polls`` makes them
half-finished (RUNNING) for that many ``wait`` calls, and the effect (VM running, VM gone) happens
when they finish. Errors use the documented ``{"error": {"code", "message", "errors": [...]}}``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.provisioning.injection import FaultInjection

_PREFIX = "/compute/v1/projects/{project}/zones/{zone}"


@dataclass
class GcpFault:
    method: str
    pattern: str
    status: int = 503
    delay: float = 0.0
    times: int = 1


class FakeGcp(FaultInjection[GcpFault]):
    def __init__(self, *, nat_ip: str = "127.0.0.1", pending_polls: int = 0) -> None:
        super().__init__()
        self.instances: dict[str, dict[str, Any]] = {}
        # instance name -> "namespace/key" -> value, as the VM's metadata server stored them
        self.guest_attributes: dict[str, dict[str, str]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.authorization_headers: list[str | None] = []
        self.nat_ip = nat_ip
        self.pending_polls = pending_polls
        self._ids = itertools.count(1000)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_post(f"{_PREFIX}/instances", self._insert)
        r.add_get(f"{_PREFIX}/instances", self._list)
        r.add_get(f"{_PREFIX}/instances/{{name}}", self._get)
        r.add_delete(f"{_PREFIX}/instances/{{name}}", self._delete)
        r.add_post(f"{_PREFIX}/instances/{{name}}/start", self._start)
        r.add_get(f"{_PREFIX}/instances/{{name}}/getGuestAttributes", self._guest_attributes)
        r.add_get(f"{_PREFIX}/operations/{{op}}", self._operation)
        r.add_post(f"{_PREFIX}/operations/{{op}}/wait", self._wait)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        self.authorization_headers.append(request.headers.get("Authorization"))
        fault = await self.injected(request)
        if fault:
            return _error(fault.status, "injected fault", "backendError")
        response: web.StreamResponse = await handler(request)
        return response

    def _operation_for(
        self, request: web.Request, kind: str, target: str, effect: Any
    ) -> dict[str, Any]:
        name = f"operation-{next(self._ids)}"
        project, zone = request.match_info["project"], request.match_info["zone"]
        operation = {
            "kind": "compute#operation",
            "id": str(next(self._ids)),
            "name": name,
            "operationType": kind,
            "targetLink": f"https://compute/projects/{project}/zones/{zone}/instances/{target}",
            "status": "RUNNING" if self.pending_polls else "DONE",
            "progress": 0 if self.pending_polls else 100,
            "zone": f"projects/{project}/zones/{zone}",
            "selfLink": f"https://compute/projects/{project}/zones/{zone}/operations/{name}",
            "_remaining": self.pending_polls,
            "_effect": effect,
        }
        self.operations[name] = operation
        if not self.pending_polls:
            effect()
        return _public(operation)

    async def _insert(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body.get("name", "")
        if name in self.instances:
            return _error(
                409,
                f"The resource 'projects/{request.match_info['project']}/zones/"
                f"{request.match_info['zone']}/instances/{name}' already exists",
                "alreadyExists",
            )
        instance = dict(body) | {"id": str(next(self._ids)), "status": "PROVISIONING"}
        self.instances[name] = instance

        def boot() -> None:
            instance["status"] = "RUNNING"
            for nic in instance.get("networkInterfaces", []):
                for access in nic.get("accessConfigs", []):
                    access["natIP"] = self.nat_ip

        return web.json_response(self._operation_for(request, "insert", name, boot))

    async def _get(self, request: web.Request) -> web.Response:
        instance = self.instances.get(request.match_info["name"])
        if instance is None:
            return _error(
                404,
                f"The resource 'instances/{request.match_info['name']}' was not found",
                "notFound",
            )
        return web.json_response(instance)

    async def _list(self, request: web.Request) -> web.Response:
        expression = request.query.get("filter", "")
        items = [i for i in self.instances.values() if _filter(i, expression)]
        return web.json_response({"kind": "compute#instanceList", "items": items})

    async def _start(self, request: web.Request) -> web.Response:
        instance = self.instances.get(request.match_info["name"])
        if instance is None:
            return _error(404, "not found", "notFound")

        def start() -> None:
            instance["status"] = "RUNNING"

        return web.json_response(self._operation_for(request, "start", instance["name"], start))

    async def _guest_attributes(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.instances:
            return _error(404, f"The resource 'instances/{name}' was not found", "notFound")
        query_path = request.query.get("queryPath", "")
        found = [
            {"namespace": path.split("/", 1)[0], "key": path.split("/", 1)[1], "value": value}
            for path, value in sorted(self.guest_attributes.get(name, {}).items())
            if path.startswith(query_path)
        ]
        if not found:
            return _error(404, f"The resource '{query_path}' was not found", "notFound")
        return web.json_response(
            {
                "kind": "compute#guestAttributes",
                "queryPath": query_path,
                "queryValue": {"items": found},
                "selfLink": f"https://compute/instances/{name}/getGuestAttributes",
            }
        )

    async def _delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.instances:
            return _error(404, f"The resource 'instances/{name}' was not found", "notFound")
        self.instances[name]["status"] = "STOPPING"
        return web.json_response(
            self._operation_for(request, "delete", name, lambda: self.instances.pop(name, None))
        )

    async def _operation(self, request: web.Request) -> web.Response:
        operation = self.operations.get(request.match_info["op"])
        if operation is None:
            return _error(404, "operation not found", "notFound")
        return web.json_response(_public(operation))

    async def _wait(self, request: web.Request) -> web.Response:
        operation = self.operations.get(request.match_info["op"])
        if operation is None:
            return _error(404, "operation not found", "notFound")
        if operation["status"] != "DONE":
            operation["_remaining"] -= 1
            if operation["_remaining"] <= 0:
                operation["status"], operation["progress"] = "DONE", 100
                operation["_effect"]()
        return web.json_response(_public(operation))


def _public(operation: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in operation.items() if not k.startswith("_")}


def _error(status: int, message: str, reason: str) -> web.Response:
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
        }
    }
    return web.json_response(body, status=status)


_LABEL_EQ = re.compile(r'^labels\.([a-z0-9_-]+)\s*=\s*"([^"]*)"$')
_LABEL_ANY = re.compile(r"^labels\.([a-z0-9_-]+):\*$")


def _filter(instance: dict[str, Any], expression: str) -> bool:
    labels = instance.get("labels", {})
    if not expression:
        return True
    if match := _LABEL_EQ.match(expression):
        return bool(labels.get(match.group(1)) == match.group(2))
    if match := _LABEL_ANY.match(expression):
        return match.group(1) in labels
    raise ValueError(f"fake GCP does not understand filter {expression!r}")
