"""The failover state machine: events in, decisions out, no I/O and no clock of its own.

Everything that touches sockets or processes (health probes, hooks, the router) lives around this
module in proxy.workspace; here we only decide. Time arrives inside events (``at``, seconds on a
monotonic clock), so tests drive the machine byte-exact and time-exact with a fake clock.

States (``State``):

    SERVING_PRIMARY ──primary down, standby up──► SWITCHING(to standby) ──► SERVING_STANDBY
    SERVING_STANDBY ──primary healthy for the hold-down (auto) or admin failback──►
        SWITCHING(to primary; standby keeps serving while before_failback runs) ──► SERVING_PRIMARY
    any ──nothing healthy──► UNAVAILABLE ──a backend comes up──► serving it

Hysteresis: a backend goes down after ``fall`` consecutive failures and comes back after ``rise``
consecutive successes; automatic failback also waits ``failback_hold`` seconds of uninterrupted
health, and a failed before_failback hook blocks the next attempt for another hold-down. A flapping
primary therefore cannot bounce traffic.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Literal, TypeAlias

__all__ = [
    "Activate",
    "AdminFailback",
    "AdminFailover",
    "BackendHealth",
    "BackendReplaced",
    "CheckResult",
    "CommandRefused",
    "Decision",
    "Event",
    "FailoverMachine",
    "HealthChanged",
    "HookFinished",
    "HookName",
    "PassiveFailure",
    "Policy",
    "ProbeNow",
    "Role",
    "RunHook",
    "State",
    "SwitchFinished",
    "SwitchRecord",
    "SwitchStarted",
    "Tick",
]

Role = Literal["primary", "standby"]
HookName = Literal["before_failover", "on_failover", "before_failback", "on_failback"]
ROLES: tuple[Role, Role] = ("primary", "standby")


def other(role: Role) -> Role:
    return "standby" if role == "primary" else "primary"


class State(enum.StrEnum):
    SERVING_PRIMARY = "serving_primary"
    SERVING_STANDBY = "serving_standby"
    SWITCHING = "switching"
    UNAVAILABLE = "unavailable"


SERVING: dict[Role, State] = {"primary": State.SERVING_PRIMARY, "standby": State.SERVING_STANDBY}


@dataclass(frozen=True)
class Policy:
    fall: int = 2
    rise: int = 3
    failback: Literal["auto", "manual"] = "auto"
    failback_hold: float = 30.0
    # Which blocking hooks exist: a switch waits for them only when they are configured.
    before_failover: bool = False
    before_failback: bool = False


# ---------------------------------------------------------------------------------------- events


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
class Tick:
    """Time passed; lets hold-downs expire without a health event."""

    at: float


@dataclass(frozen=True)
class AdminFailover:
    at: float
    reason: str = "admin: failover requested"


@dataclass(frozen=True)
class AdminFailback:
    at: float
    reason: str = "admin: failback requested"


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


Event: TypeAlias = (
    CheckResult
    | PassiveFailure
    | Tick
    | AdminFailover
    | AdminFailback
    | BackendReplaced
    | HookFinished
)

# ------------------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class SwitchRecord:
    """One switch, from the first sign of trouble to the new backend serving (or abandonment)."""

    id: int
    kind: Literal["failover", "failback", "recovery"]
    from_role: Role | None
    to_role: Role
    reason: str
    detected_at: float  # first failed check of the old backend, or the admin command
    started_at: float
    finished_at: float | None = None
    outcome: Literal["pending", "completed", "abandoned"] = "pending"
    detail: str = ""

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
    role: Role
    up: bool
    reason: str


@dataclass(frozen=True)
class SwitchStarted:
    switch: SwitchRecord


@dataclass(frozen=True)
class SwitchFinished:
    switch: SwitchRecord


@dataclass(frozen=True)
class CommandRefused:
    """An admin command cannot be carried out in the current state (answered with 409)."""

    reason: str


Decision: TypeAlias = (
    Activate | ProbeNow | RunHook | HealthChanged | SwitchStarted | SwitchFinished | CommandRefused
)

# --------------------------------------------------------------------------------------- health


@dataclass
class BackendHealth:
    """Consecutive-result counters for one backend. ``up`` is None until the first check."""

    up: bool | None = None
    ok_streak: int = 0
    fail_streak: int = 0
    first_failure_at: float | None = None
    up_since: float | None = None
    last_check_at: float | None = None
    last_latency: float | None = None
    last_detail: str = ""
    # A passive failure counts once per active check, however many requests fail at the same time.
    passive_counted: bool = False
    probe_requested: bool = False

    def record(self, ok: bool, at: float, fall: int, rise: int) -> bool:
        """Count one result; return True when ``up`` changed."""
        before = self.up
        if ok:
            self.ok_streak += 1
            self.fail_streak = 0
            self.first_failure_at = None
            if self.up is None or (not self.up and self.ok_streak >= rise):
                self.up = True
                self.up_since = at
        else:
            self.fail_streak += 1
            self.ok_streak = 0
            if self.first_failure_at is None:
                self.first_failure_at = at
            if self.up is None or (self.up and self.fail_streak >= fall):
                self.up = False
                self.up_since = None
        return self.up != before


# -------------------------------------------------------------------------------------- machine


@dataclass
class _Switch:
    record: SwitchRecord
    waiting_for: HookName | None = None


@dataclass
class FailoverMachine:
    policy: Policy
    state: State = State.UNAVAILABLE
    active: Role | None = None
    epoch: int = 0
    health: dict[Role, BackendHealth] = field(
        default_factory=lambda: {"primary": BackendHealth(), "standby": BackendHealth()}
    )
    history: deque[SwitchRecord] = field(default_factory=lambda: deque(maxlen=50))
    last_served: Role | None = None
    failback_blocked_until: float = 0.0
    # An operator's failover holds until their failback: auto failback must not undo it.
    pinned_to_standby: bool = False
    _switch: _Switch | None = None
    _next_switch_id: int = 1

    # -------------------------------------------------------------------------- public API

    @property
    def target(self) -> Role | None:
        """Where a switch in progress is heading."""
        return self._switch.record.to_role if self._switch else None

    @property
    def failback_available(self) -> bool:
        """Serving the standby while the primary is healthy again: the user may switch home."""
        return self.state == State.SERVING_STANDBY and self.health["primary"].up is True

    def handle(self, event: Event) -> list[Decision]:
        out: list[Decision] = []
        match event:
            case CheckResult():
                self._on_check(event, out)
            case PassiveFailure():
                self._on_passive(event, out)
            case Tick():
                pass
            case AdminFailover():
                self._on_admin_failover(event, out)
                return out
            case AdminFailback():
                self._on_admin_failback(event, out)
                return out
            case BackendReplaced():
                self.health[event.role] = BackendHealth()
                out.append(ProbeNow(event.role))
            case HookFinished():
                self._on_hook(event, out)
        self._reconsider(event.at, out)
        return out

    # ---------------------------------------------------------------------------- health

    def _on_check(self, ev: CheckResult, out: list[Decision]) -> None:
        h = self.health[ev.role]
        h.last_check_at, h.last_latency, h.last_detail = ev.at, ev.latency, ev.detail
        h.passive_counted = False
        h.probe_requested = False
        if h.record(ev.ok, ev.at, self.policy.fall, self.policy.rise):
            out.append(
                HealthChanged(ev.role, bool(h.up), ev.detail or ("ok" if ev.ok else "failed"))
            )
        elif not ev.ok and h.up:
            # One failure short of ``fall``: confirm at once rather than after an interval
            # (HAProxy's fastinter), so a frozen machine is out after fall x timeout.
            h.probe_requested = True
            out.append(ProbeNow(ev.role))

    def _on_passive(self, ev: PassiveFailure, out: list[Decision]) -> None:
        h = self.health[ev.role]
        if not h.up:
            return
        if not h.passive_counted:
            h.passive_counted = True
            h.last_detail = ev.detail
            if h.record(False, ev.at, self.policy.fall, self.policy.rise):
                out.append(HealthChanged(ev.role, False, f"passive: {ev.detail}"))
                return
        if not h.probe_requested:
            h.probe_requested = True
            out.append(ProbeNow(ev.role))

    def _up(self, role: Role) -> bool:
        return self.health[role].up is True

    def _down(self, role: Role) -> bool:
        return self.health[role].up is False

    # ----------------------------------------------------------------------- the decision

    def _reconsider(self, at: float, out: list[Decision]) -> None:
        match self.state:
            case State.SERVING_PRIMARY:
                if self._down("primary"):
                    self._leave("primary", at, out)
            case State.SERVING_STANDBY:
                if self._down("standby"):
                    self._leave("standby", at, out)
                elif self._auto_failback_due(at):
                    hold = self.policy.failback_hold
                    self._start_failback(at, f"primary healthy for {hold:g}s", at, out)
            case State.SWITCHING:
                self._check_switch_target(at, out)
            case State.UNAVAILABLE:
                self._recover(at, out)

    def _auto_failback_due(self, at: float) -> bool:
        p = self.health["primary"]
        return (
            self.policy.failback == "auto"
            and not self.pinned_to_standby
            and p.up is True
            and p.up_since is not None
            and at - p.up_since >= self.policy.failback_hold
            and at >= self.failback_blocked_until
        )

    def _leave(self, role: Role, at: float, out: list[Decision]) -> None:
        """The serving backend is down: go to the other one if it is up, else to UNAVAILABLE."""
        h = self.health[role]
        detected = h.first_failure_at if h.first_failure_at is not None else at
        reason = f"{role} down: {h.last_detail or 'health check failed'}"
        if self._up(other(role)):
            if role == "primary":
                self._start_failover(at, reason, detected, out)
            else:
                # The standby died while the primary is healthy: no time for before_failback
                # (its data source is gone), so switch home at once.
                self._switch_now("recovery", "primary", reason, detected, at, out)
        else:
            self._activate(None, at, out)
            self.state = State.UNAVAILABLE

    def _recover(self, at: float, out: list[Decision]) -> None:
        """Nothing is serving: take whichever backend is up, the last one served first."""
        if self.last_served is None and self.health["primary"].up is None:
            return  # start-up: the primary's first check decides before the standby may serve
        order: list[Role] = [self.last_served] if self.last_served else []
        order += [r for r in ROLES if r not in order]
        for role in order:
            if not self._up(role):
                continue
            if role == "standby" and self.last_served != "standby":
                h = self.health["primary"]
                detected = h.first_failure_at if h.first_failure_at is not None else at
                self._start_failover(at, "primary unavailable, standby up", detected, out)
            elif self.last_served in (None, role):
                self._activate(role, at, out)
                self.state = SERVING[role]
            else:
                reason = "standby unavailable, primary up"
                self._switch_now("recovery", role, reason, at, at, out)
            return

    def _check_switch_target(self, at: float, out: list[Decision]) -> None:
        sw = self._switch
        assert sw is not None
        target = sw.record.to_role
        if not self._down(target):
            return
        self._finish(sw, at, "abandoned", f"{target} went down during the switch", out)
        source = sw.record.from_role
        if source is not None and self.active == source and self._up(source):
            self.state = SERVING[source]
        else:
            self._activate(None, at, out)
            self.state = State.UNAVAILABLE

    # ----------------------------------------------------------------------------- switches

    def _new_switch(
        self,
        kind: Literal["failover", "failback", "recovery"],
        to_role: Role,
        reason: str,
        detected_at: float,
        at: float,
    ) -> SwitchRecord:
        record = SwitchRecord(
            id=self._next_switch_id,
            kind=kind,
            from_role=self.active if self.active is not None else self.last_served,
            to_role=to_role,
            reason=reason,
            detected_at=detected_at,
            started_at=at,
        )
        self._next_switch_id += 1
        return record

    def _start_failover(self, at: float, reason: str, detected: float, out: list[Decision]) -> None:
        if not self.policy.before_failover:
            self._switch_now("failover", "standby", reason, detected, at, out)
            return
        record = self._new_switch("failover", "standby", reason, detected, at)
        # The primary is gone: stop routing to it while the standby is fenced.
        self._activate(None, at, out)
        self.state = State.SWITCHING
        self._switch = _Switch(record, waiting_for="before_failover")
        out += [SwitchStarted(record), RunHook("before_failover", record)]

    def _start_failback(self, at: float, reason: str, detected: float, out: list[Decision]) -> None:
        if not self.policy.before_failback:
            self._switch_now("failback", "primary", reason, detected, at, out)
            return
        record = self._new_switch("failback", "primary", reason, detected, at)
        # The standby keeps serving while its files are copied home.
        self.state = State.SWITCHING
        self._switch = _Switch(record, waiting_for="before_failback")
        out += [SwitchStarted(record), RunHook("before_failback", record)]

    def _switch_now(
        self,
        kind: Literal["failover", "failback", "recovery"],
        to_role: Role,
        reason: str,
        detected: float,
        at: float,
        out: list[Decision],
    ) -> None:
        sw = _Switch(self._new_switch(kind, to_role, reason, detected, at))
        out.append(SwitchStarted(sw.record))
        self._complete(sw, at, out)

    def _complete(self, sw: _Switch, at: float, out: list[Decision]) -> None:
        role = sw.record.to_role
        self._activate(role, at, out)
        self.state = SERVING[role]
        record = self._finish(sw, at, "completed", "", out)
        if record.kind == "failover":
            out.append(RunHook("on_failover", record))
        elif record.kind == "failback":
            out.append(RunHook("on_failback", record))

    def _finish(
        self,
        sw: _Switch,
        at: float,
        outcome: Literal["completed", "abandoned"],
        detail: str,
        out: list[Decision],
    ) -> SwitchRecord:
        record = replace(
            sw.record, finished_at=at, outcome=outcome, detail=detail or sw.record.detail
        )
        self.history.append(record)
        self._switch = None
        out.append(SwitchFinished(record))
        return record

    def _activate(self, role: Role | None, at: float, out: list[Decision]) -> None:
        if role == self.active:
            return
        if role != "standby":
            self.pinned_to_standby = False
        previous = self.active
        self.active = role
        if role is not None:
            self.last_served = role
        self.epoch += 1
        out.append(Activate(role, previous, self.epoch))

    # -------------------------------------------------------------------------------- hooks

    def _on_hook(self, ev: HookFinished, out: list[Decision]) -> None:
        sw = self._switch
        if sw is None or sw.record.id != ev.switch_id or sw.waiting_for != ev.hook:
            return  # a hook that is not blocking anything (on_*), or a stale one
        sw.waiting_for = None
        if ev.hook == "before_failover":
            # The primary is dead either way: a failed fence is reported, not a reason to leave
            # the user with nothing.
            if not ev.ok:
                sw.record = replace(sw.record, detail=f"before_failover failed: {ev.detail}")
            if self._up("standby"):
                self._complete(sw, ev.at, out)
        elif ev.ok:
            if self._up("primary"):
                self._complete(sw, ev.at, out)
            else:
                self._finish(sw, ev.at, "abandoned", "primary went down during failback", out)
                self.state = SERVING[self.active] if self.active else State.UNAVAILABLE
        else:
            self._finish(sw, ev.at, "abandoned", f"before_failback failed: {ev.detail}", out)
            self.failback_blocked_until = ev.at + self.policy.failback_hold
            self.state = SERVING[self.active] if self.active else State.UNAVAILABLE

    # -------------------------------------------------------------------------------- admin

    def _on_admin_failover(self, ev: AdminFailover, out: list[Decision]) -> None:
        if self.state != State.SERVING_PRIMARY:
            out.append(CommandRefused(f"failover needs state serving_primary, not {self.state}"))
        elif not self._up("standby"):
            out.append(CommandRefused("the standby is not healthy"))
        else:
            self.pinned_to_standby = True
            self._start_failover(ev.at, ev.reason, ev.at, out)

    def _on_admin_failback(self, ev: AdminFailback, out: list[Decision]) -> None:
        if self.state != State.SERVING_STANDBY:
            out.append(CommandRefused(f"failback needs state serving_standby, not {self.state}"))
        elif not self._up("primary"):
            out.append(CommandRefused("the primary is not healthy"))
        else:
            self.failback_blocked_until = 0.0
            self.pinned_to_standby = False
            self._start_failback(ev.at, ev.reason, ev.at, out)
