"""What the pages need to know about the failover, and the one thing they may ask of it.

The proxy core implements `SwitchView` over its state machine; the pages only read snapshots and
ask for a failback. Tests drive the pages with a fake view.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Literal, Protocol

from proxy.failover import Role

__all__ = ["ROLE_LABELS", "SwitchSnapshot", "SwitchState", "SwitchView"]

SwitchState = Literal["serving_primary", "serving_standby", "switching", "unavailable"]
# The catalogue keys under which each role's name is shown (proxy.pages.i18n): "GPU", "CPU Backup".
ROLE_LABELS: dict[Role, str] = {"primary": "role.primary", "standby": "role.standby"}


@dataclass(frozen=True, slots=True)
class SwitchSnapshot:
    """The failover as the browser should see it, at one moment.

    epoch               increments on every switch (either direction); never decreases within one
                        proxy process
    state               serving_primary / serving_standby: requests are being served;
                        switching: a switch to `target` is under way; unavailable: nothing healthy
    active              the role serving requests now, or None while switching or unavailable
    target              where a switch is heading (None when no switch is under way)
    primary_healthy     the GPU machine passes its health checks
    standby_healthy     the CPU Backup passes its health checks
    failback_available  failback is manual, the primary is healthy again, and the standby serves
    park                the parked GPU as the IDE tells it (proxy.park_status.ParkStatus.notice):
                        phase ("resumed" for a while after a resume), detail, idle_min,
                        park_in_min, standby, step (a resume's), resume_s; None when there is
                        nothing to say
    """

    epoch: int
    state: SwitchState
    active: Role | None
    target: Role | None
    primary_healthy: bool
    standby_healthy: bool
    failback_available: bool
    park: dict[str, object] | None = None

    @property
    def ready(self) -> bool:
        """A backend is serving: a page waiting for one can go back to where the user was."""
        return self.state in {"serving_primary", "serving_standby"}

    def as_json(self) -> dict[str, object]:
        """The wire form sent on /__dumont/events and read by transition.js and watcher.js."""
        return {**asdict(self), "ready": self.ready}


class SwitchView(Protocol):
    """The proxy core's failover, seen from the pages."""

    def snapshot(self) -> SwitchSnapshot:
        """The state right now."""
        ...

    def changes(self) -> AsyncIterator[SwitchSnapshot]:
        """Yield the current snapshot at once, then each new one as it happens, until the consumer
        stops iterating (an `async def ... yield` generator fits). A slow consumer may miss
        intermediate snapshots but must always receive the latest one."""
        ...

    async def request_failback(self) -> None:
        """Ask for a switch back to the primary (the user clicked "switch now"). Raise
        proxy.errors.Conflict when the state machine refuses it now."""
        ...

    async def keep_gpu(self) -> None:
        """The user's "Keep it" on the idle notice; Conflict when there is nothing to keep."""
        ...

    async def resume_gpu(self) -> None:
        """The user's "Bring the GPU back"; Conflict when nothing is parked or a resume runs."""
        ...
