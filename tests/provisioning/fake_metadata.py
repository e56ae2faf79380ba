"""A Compute Engine VM's metadata server on loopback, the parts the standby's preemption watcher
uses, in its documented wire format:

- every request must carry ``Metadata-Flavor: Google`` (else 403), and one carrying
  ``X-Forwarded-For`` is refused (403), so nothing can be proxied to it; every answer carries
  ``Metadata-Flavor: Google`` and values come as ``application/text``;
- ``GET /computeMetadata/v1/instance/preempted``: ``FALSE``, or ``TRUE`` once GCE sent the spot
  VM its preemption notice, with an ``ETag``; ``?wait_for_change=true`` holds the request until
  the value changes, unless ``last_etag`` already differs from the current ETag (then at once);
  ``timeout_sec`` bounds the wait (the unchanged value comes back);
- ``PUT /computeMetadata/v1/instance/guest-attributes/NAMESPACE/KEY``: stores the body as the
  guest attribute, which the Compute API fake (FakeGcp.guest_attributes) then serves; 403 unless
  the instance's metadata has ``enable-guest-attributes = TRUE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

from aiohttp import web

from tests.provisioning.fake_gcp import FakeGcp

__all__ = ["FakeMetadataServer"]

FLAVOR = {"Metadata-Flavor": "Google"}


class FakeMetadataServer:
    """The metadata server of one instance of ``gcp`` (by name)."""

    def __init__(self, gcp: FakeGcp, instance: str) -> None:
        self.gcp = gcp
        self.instance = instance
        self.preempted = False
        self.refused: list[str] = []  # why requests were turned away
        self._changed = asyncio.Condition()
        self._closing = False

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/computeMetadata/v1/instance/preempted", self._preempted)
        app.router.add_put(
            "/computeMetadata/v1/instance/guest-attributes/{namespace}/{key}", self._put_attribute
        )
        return app

    async def preempt(self) -> None:
        """GCE's preemption notice: the value turns TRUE (the VM stops about 30 s later)."""
        await self._set(True)

    async def boot(self) -> None:
        """The VM started again after a preemption: the value is FALSE once more."""
        await self._set(False)

    async def release(self) -> None:
        """Answer every held request now (its value unchanged), so the server can close."""
        async with self._changed:
            self._closing = True
            self._changed.notify_all()

    async def _set(self, value: bool) -> None:
        async with self._changed:
            self.preempted = value
            self._changed.notify_all()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Metadata-Flavor") != "Google":
            self.refused.append("no Metadata-Flavor: Google")
            return web.Response(status=403, text="Missing required header: Metadata-Flavor\n")
        if "X-Forwarded-For" in request.headers:
            self.refused.append("X-Forwarded-For")
            return web.Response(status=403, text="Request contains X-Forwarded-For\n")
        response: web.StreamResponse = await handler(request)
        response.headers.update(FLAVOR)
        return response

    def _value(self) -> tuple[str, str]:
        value = "TRUE" if self.preempted else "FALSE"
        return value, hashlib.sha256(value.encode()).hexdigest()[:16]

    async def _preempted(self, request: web.Request) -> web.Response:
        value, etag = self._value()
        if (
            request.query.get("wait_for_change") == "true"
            and request.query.get("last_etag", etag) == etag
        ):
            timeout = float(request.query.get("timeout_sec", "3600"))
            async with self._changed:
                # timeout_sec passed with no change: the unchanged value, as GCE answers.
                with contextlib.suppress(TimeoutError):
                    changed = self._changed.wait_for(
                        lambda: self._closing or self._value()[1] != etag
                    )
                    await asyncio.wait_for(changed, timeout)
            value, etag = self._value()
        return web.Response(text=value, content_type="application/text", headers={"ETag": etag})

    async def _put_attribute(self, request: web.Request) -> web.Response:
        metadata = self.gcp.instances.get(self.instance, {}).get("metadata", {})
        items = {i.get("key"): i.get("value") for i in metadata.get("items", [])}
        if items.get("enable-guest-attributes") != "TRUE":
            return web.Response(status=403, text="Guest attributes endpoint access is disabled.\n")
        path = f"{request.match_info['namespace']}/{request.match_info['key']}"
        self.gcp.guest_attributes.setdefault(self.instance, {})[path] = await request.text()
        return web.Response(text="", content_type="application/text")
