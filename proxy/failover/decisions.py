"""What the failover machine decides: where traffic goes, what to probe, which hook to run, and what
happened (health changes, switches), each with its ``Cause``. proxy.workspace carries them out and
hands them to the observers (logs, metrics, the dashboard, the IDE's event stream)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from .events import Cause, HookName, Role

__all__ = [
    "Activate",
    "CommandRefused",
    "Decision",
    "FirstRequestServed",
    "HealthChanged",
    "ProbeNow",
    "RunHook",
    "SwitchFinished",
    "SwitchKind",
    "SwitchRecord",
    "SwitchStarted",
]

SwitchKind = Literal["failover", "failback", "recovery"]


@dataclass(frozen=True)
class SwitchRecord:
    """One switch, from the first sign of trouble to the new backend serving (or abandonment).

    ``reason`` is the sentence for people (logs, DUMONT_REASON, the dashboard); ``cause`` is the
    same thing as data. ``abandoned_by`` says why an abandoned switch was given up (the target's
    health cause, or a failed hook); ``served_at`` is when the new backend answered its first
    request, None until then."""

    id: int
    kind: SwitchKind
    from_role: Role | None
    to_role: Role
    reason: str
    cause: Cause
    detected_at: float  # first failed check of the old backend, or the admin command
    started_at: float
    finished_at: float | None = None
    outcome: Literal["pending", "completed", "abandoned"] = "pending"
    detail: str = ""
    abandoned_by: Cause | None = None
    served_at: float | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from the first failure (or the command) to the new backend taking traffic."""
        return None if self.finished_at is None else self.finished_at - self.detected_at


@dataclass(frozen=True)
class Activate:
    """Route traffic to ``role`` (None: nothing can serve). ``previous`` lost its traffic."""

    role: Role | None
    previous: Role | None
    epoch: int


@dataclass(frozen=True)
class ProbeNow:
    """Check this backend now instead of waiting for the next interval."""

    role: Role


@dataclass(frozen=True)
class RunHook:
    hook: HookName
    switch: SwitchRecord


@dataclass(frozen=True)
class HealthChanged:
    """A backend went up or down. Only active checks bring one up; either kind takes one down."""

    role: Role
    up: bool
    reason: str
    cause: Cause = Cause.ACTIVE_CHECK


@dataclass(frozen=True)
class SwitchStarted:
    switch: SwitchRecord


@dataclass(frozen=True)
class SwitchFinished:
    switch: SwitchRecord


@dataclass(frozen=True)
class FirstRequestServed:
    """The completed ``switch``'s new backend answered its first request (``switch.served_at``):
    the moment the user got their work back, which is what a switch's duration is measured to."""

    switch: SwitchRecord


@dataclass(frozen=True)
class CommandRefused:
    """An admin command cannot be carried out in the current state (answered with 409)."""

    reason: str


Decision: TypeAlias = (
    Activate
    | ProbeNow
    | RunHook
    | HealthChanged
    | SwitchStarted
    | SwitchFinished
    | FirstRequestServed
    | CommandRefused
)
