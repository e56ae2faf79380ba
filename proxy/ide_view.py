"""The pages' SwitchView over the workspace and the parked GPU (issues 3 and 18).

The watcher in the IDE follows one event stream: the failover machine's snapshot, plus the park
notice (idle countdown with "Keep it", parked with "Bring the GPU back", resume progress). The
workspace wakes the stream on every event; a park report wakes it through the same signal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

from .pages.view import SwitchSnapshot
from .park_actions import ParkActions
from .workspace import Workspace

__all__ = ["IdeView"]

# The stream re-reads the state on every workspace event (health checks every interval, switches,
# park reports); this only bounds a wait when nothing at all happens.
IDLE_WAKE = 60.0


class IdeView:
    def __init__(self, workspace: Workspace, park: ParkActions) -> None:
        self.workspace = workspace
        self.park = park
        park.park.listeners.append(workspace.nudge)

    def snapshot(self) -> SwitchSnapshot:
        return dataclasses.replace(self.workspace.snapshot(), park=self.park.park.notice())

    async def changes(self) -> AsyncIterator[SwitchSnapshot]:
        """The current snapshot, then a new one whenever it differs (health checks that change
        nothing the browser sees are not sent)."""
        last = self.snapshot()
        yield last
        while True:
            await self.workspace.changed(IDLE_WAKE)
            if (now := self.snapshot()) != last:
                last = now
                yield now

    async def request_failback(self) -> None:
        await self.workspace.request_failback()

    async def keep_gpu(self) -> None:
        self.park.keep()

    async def resume_gpu(self) -> None:
        self.park.resume()
