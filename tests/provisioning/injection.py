"""What both fake clouds inject into their answers: requests held until the test releases them
(a crash at a chosen step) and faults (an error status, a delay) for the next N matching requests.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from aiohttp import web

__all__ = ["FaultInjection", "Hang", "InjectedFault", "hold_and_fault"]


@dataclass
class Hang:
    method: str
    pattern: str  # regex on the path
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)


class InjectedFault(Protocol):
    method: str
    pattern: str  # regex on the path
    status: int
    delay: float
    times: int


FaultT = TypeVar("FaultT", bound=InjectedFault)


async def hold_and_fault(
    request: web.Request, hangs: Sequence[Hang], faults: list[FaultT]
) -> FaultT | None:
    """Wait while a matching hang holds `request`; then take one use of each matching fault
    (removing it at its last), sleep its delay, and return the first that sets a status."""
    for hang in list(hangs):
        if hang.method == request.method and re.search(hang.pattern, request.path):
            hang.arrived.set()
            await hang.released.wait()
    for fault in list(faults):
        if fault.method == request.method and re.search(fault.pattern, request.path):
            fault.times -= 1
            if fault.times <= 0:
                faults.remove(fault)
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status:
                return fault
    return None


class FaultInjection(Generic[FaultT]):
    """The hangs and faults of one fake: tests append to `faults`, hold requests with hang() and
    free them all with release_all(); the fake's middleware awaits injected() first."""

    def __init__(self) -> None:
        self.faults: list[FaultT] = []
        self.hangs: list[Hang] = []

    def hang(self, method: str, pattern: str) -> Hang:
        hang = Hang(method, pattern)
        self.hangs.append(hang)
        return hang

    def release_all(self) -> None:
        for hang in self.hangs:
            hang.released.set()
        self.hangs.clear()

    async def injected(self, request: web.Request) -> FaultT | None:
        return await hold_and_fault(request, self.hangs, self.faults)
