"""A SwitchView test double: the tests set snapshots by hand and watch what the pages asked for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from proxy.errors import Conflict
from proxy.pages import SwitchSnapshot

__all__ = [
    "CONNECTING",
    "FAILBACK_OFFERED",
    "SERVING_PRIMARY",
    "SERVING_STANDBY",
    "SWITCHING",
    "UNAVAILABLE",
    "FakeSwitchView",
]

SERVING_PRIMARY = SwitchSnapshot(0, "serving_primary", "primary", None, True, True, False)
SWITCHING = SwitchSnapshot(1, "switching", None, "standby", False, False, False)
CONNECTING = SwitchSnapshot(1, "switching", None, "standby", False, True, False)
SERVING_STANDBY = SwitchSnapshot(1, "serving_standby", "standby", None, False, True, False)
UNAVAILABLE = SwitchSnapshot(1, "unavailable", None, None, False, False, False)
FAILBACK_OFFERED = SwitchSnapshot(1, "serving_standby", "standby", None, True, True, True)


class FakeSwitchView:
    def __init__(self, snapshot: SwitchSnapshot = SERVING_PRIMARY) -> None:
        self._snapshot = snapshot
        self._subscribers: set[asyncio.Queue[SwitchSnapshot]] = set()
        self.failback_requests = 0
        self.refuse_failback = False
        self.keep_requests = 0
        self.resume_requests = 0

    def snapshot(self) -> SwitchSnapshot:
        return self._snapshot

    def set(self, snapshot: SwitchSnapshot) -> None:
        self._snapshot = snapshot
        for queue in self._subscribers:
            queue.put_nowait(snapshot)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def changes(self) -> AsyncIterator[SwitchSnapshot]:
        queue: asyncio.Queue[SwitchSnapshot] = asyncio.Queue()
        self._subscribers.add(queue)  # before the first yield: no change can slip between
        try:
            yield self._snapshot
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    async def request_failback(self) -> None:
        if self.refuse_failback:
            raise Conflict("no failback now")
        self.failback_requests += 1

    async def keep_gpu(self) -> None:
        if self._snapshot.park is None or self._snapshot.park.get("phase") != "idle":
            raise Conflict("nothing to keep")
        self.keep_requests += 1

    async def resume_gpu(self) -> None:
        if self._snapshot.park is None or self._snapshot.park.get("phase") != "parked":
            raise Conflict("nothing to resume")
        self.resume_requests += 1
