"""What the failover machine is told: health results, failing requests, commands, hook results,
served requests and the passing of time. Each event carries its own ``at`` (seconds on a monotonic
clock), so the machine never reads a clock.

``Cause`` is the vocabulary of *why*: every health change and every switch names one, so a log line,
a metric or a dashboard reports the machine's own reason instead of guessing it from text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = [
    "COMMANDED",
    "ROLES",
    "AdminFailback",
    "AdminFailover",
    "Adopt",
    "BackendReplaced",
    "Cause",
    "CheckResult",
    "Event",
    "HookFinished",
    "HookName",
    "PassiveFailure",
    "PeerViews",
    "RequestServed",
    "Role",
    "Tick",
    "other",
]

Role = Literal["primary", "standby"]
"""Which side of the pair: the GPU machine (primary) or the CPU Backup (standby)."""

ROLES: tuple[Role, Role] = ("primary", "standby")
HookName = Literal["before_failover", "on_failover", "before_failback", "on_failback"]


def other(role: Role) -> Role:
    return "standby" if role == "primary" else "primary"


class Cause(enum.StrEnum):
    """Why a backend's health changed, why a switch started, or why one was given up."""

    ACTIVE_CHECK = "active_check"  # the /healthz probes failed ``fall`` times (or passed ``rise``)
    PASSIVE_FAILURE = "passive_failure"  # a real request could not reach the backend
    ADMIN = "admin"  # an operator or the user asked (control API, dashboard, the IDE's button)
    SWITCHOVER = "switchover"  # a planned move to the standby after a verified flush
    PARK = "park"  # the idle GPU is parked: the standby serves while it is away
    RESUME = "resume"  # a parked GPU came back and was filled: the user goes home
    FAILBACK = "failback"  # automatic: the primary stayed healthy for ``failback_hold``
    RECOVERY = "recovery"  # nothing was serving and a backend is up (start-up, or after an outage)
    HOOK_FAILURE = "hook_failure"  # a blocking before_* hook failed: its failback is given up


COMMANDED = frozenset({Cause.ADMIN, Cause.SWITCHOVER, Cause.PARK, Cause.RESUME})
"""Causes that are someone's decision, not something that happened to a machine."""


@dataclass(frozen=True)
class CheckResult:
    """An active health check finished."""

    role: Role
    ok: bool
    at: float
    latency: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class PassiveFailure:
    """A real request could not reach the backend (refused, reset, connect timeout)."""

    role: Role
    at: float
    detail: str = ""


@dataclass(frozen=True)
class RequestServed:
    """The backend that a completed switch moved traffic to answered its first request.

    Raised by the workspace only while such a switch waits for one (``Workspace.note_served``), so
    the machine hears of one request per switch, not of every request."""

    role: Role
    at: float


@dataclass(frozen=True)
class Tick:
    """Time passed; lets hold-downs expire without a health event."""

    at: float


@dataclass(frozen=True)
class AdminFailover:
    at: float
    reason: str = "admin: failover requested"
    cause: Cause = Cause.ADMIN


@dataclass(frozen=True)
class AdminFailback:
    at: float
    reason: str = "admin: failback requested"
    cause: Cause = Cause.ADMIN


@dataclass(frozen=True)
class BackendReplaced:
    """The role now points at another machine (a replacement GPU): its health starts unknown."""

    role: Role
    at: float
    url: str


@dataclass(frozen=True)
class HookFinished:
    hook: HookName
    switch_id: int
    ok: bool
    at: float
    detail: str = ""


@dataclass(frozen=True)
class Adopt:
    """Proxy replicas (proxy.cluster): the cluster decided that ``role`` serves, and whether this
    replica's machine decides from now on (it leads) or only follows the leader's decisions.

    A following machine keeps counting health (its replica's view, which the leader weighs) but
    never switches by itself; adopting abandons a switch in progress, whose hooks are the new
    leader's business."""

    at: float
    role: Role | None
    deciding: bool
    pinned: bool = False  # an operator's failover, which auto failback must not undo


@dataclass(frozen=True)
class PeerViews:
    """What the other replicas see (proxy.cluster.views), for the leader's machine: how many of
    them are there, and how many see each backend down. A backend the leader alone sees down is
    left only after ``Policy.view_grace``: one replica's bad link cannot fail everyone over."""

    at: float
    peers: int
    down: dict[Role, int]


Event: TypeAlias = (
    CheckResult
    | PassiveFailure
    | RequestServed
    | Tick
    | AdminFailover
    | AdminFailback
    | BackendReplaced
    | HookFinished
    | Adopt
    | PeerViews
)
