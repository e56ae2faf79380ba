"""The failover state machine: events in, decisions out, no I/O and no clock of its own.

Everything that touches sockets or processes (health probes, hooks, the router) lives around this
package in proxy.workspace; here we only decide. Time arrives inside events (``at``, seconds on a
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

Replicas (proxy.cluster): a machine that does not lead only follows (``Adopt``): it counts health,
which is its replica's view, and never switches by itself. The leader's machine hears the other
replicas' views (``PeerViews``) and leaves a serving backend only when one of them sees it down too,
or when its own view has said so for ``view_grace`` seconds. Alone (no peers), nothing changes.

Why: every health change and switch carries a ``Cause``. A switch away from a backend that went
down names how it went down (active checks or failing requests); a commanded one names the command;
an automatic failback is ``FAILBACK``; leaving UNAVAILABLE for a backend whose predecessor's fall is
unknown (start-up) is ``RECOVERY``. After a completed switch the machine waits for the new backend's
first served request (``RequestServed``) and reports it once (``FirstRequestServed``).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Literal

from .decisions import (
    Activate,
    CommandRefused,
    Decision,
    FirstRequestServed,
    HealthChanged,
    ProbeNow,
    RunHook,
    SwitchFinished,
    SwitchKind,
    SwitchRecord,
    SwitchStarted,
)
from .events import (
    ROLES,
    AdminFailback,
    AdminFailover,
    Adopt,
    BackendReplaced,
    Cause,
    CheckResult,
    Event,
    HookFinished,
    HookName,
    PassiveFailure,
    PeerViews,
    RequestServed,
    Role,
    Tick,
    other,
)

__all__ = ["SERVING", "BackendHealth", "FailoverMachine", "Policy", "State"]


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
    # With other replicas watching (PeerViews): how long the leader's own view of a serving backend
    # being down must last before it acts on it alone.
    view_grace: float = 0.0


# --------------------------------------------------------------------------------------- health


@dataclass
class BackendHealth:
    """Consecutive-result counters for one backend. ``up`` is None until the first check."""

    up: bool | None = None
    ok_streak: int = 0
    fail_streak: int = 0
    first_failure_at: float | None = None
    up_since: float | None = None
    down_since: float | None = None
    last_check_at: float | None = None
    last_latency: float | None = None
    last_detail: str = ""
    down_cause: Cause | None = None  # how it went down, while it is down
    # A passive failure counts once per active check, however many requests fail at the same time.
    passive_counted: bool = False
    probe_requested: bool = False

    def record(self, ok: bool, at: float, fall: int, rise: int, cause: Cause) -> bool:
        """Count one result (``cause``: an active check or a failed request); return True when
        ``up`` changed."""
        before = self.up
        if ok:
            self.ok_streak += 1
            self.fail_streak = 0
            self.first_failure_at = None
            if self.up is None or (not self.up and self.ok_streak >= rise):
                self.up = True
                self.up_since = at
                self.down_cause = None
        else:
            self.fail_streak += 1
            self.ok_streak = 0
            if self.first_failure_at is None:
                self.first_failure_at = at
            if self.up is None or (self.up and self.fail_streak >= fall):
                self.up = False
                self.up_since = None
                self.down_since = at
                self.down_cause = cause
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
    # The last completed switch, until its new backend answers a request (RequestServed).
    awaiting_service: SwitchRecord | None = None
    # False on a replica that follows another's decisions (Adopt): health only, no switches.
    deciding: bool = True
    # The other replicas' views (PeerViews): how many there are, how many see each backend down.
    peers: int = 0
    peers_down: dict[Role, int] = field(default_factory=lambda: {"primary": 0, "standby": 0})
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
            case RequestServed():
                self._on_served(event, out)
                return out
            case HookFinished():
                self._on_hook(event, out)
            case Adopt():
                self._on_adopt(event, out)
            case PeerViews():
                self.peers = event.peers
                self.peers_down = dict(event.down)
        if self.deciding:
            self._reconsider(event.at, out)
        return out

    # ---------------------------------------------------------------------------- health

    def _on_check(self, ev: CheckResult, out: list[Decision]) -> None:
        h = self.health[ev.role]
        h.last_check_at, h.last_latency, h.last_detail = ev.at, ev.latency, ev.detail
        h.passive_counted = False
        h.probe_requested = False
        if h.record(ev.ok, ev.at, self.policy.fall, self.policy.rise, Cause.ACTIVE_CHECK):
            reason = ev.detail or ("ok" if ev.ok else "failed")
            out.append(HealthChanged(ev.role, bool(h.up), reason, Cause.ACTIVE_CHECK))
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
            cause = Cause.PASSIVE_FAILURE
            if h.record(False, ev.at, self.policy.fall, self.policy.rise, cause):
                out.append(HealthChanged(ev.role, False, f"passive: {ev.detail}", cause))
                return
        if not h.probe_requested:
            h.probe_requested = True
            out.append(ProbeNow(ev.role))

    def _on_served(self, ev: RequestServed, out: list[Decision]) -> None:
        awaiting = self.awaiting_service
        if awaiting is None or awaiting.to_role != ev.role or self.active != ev.role:
            return  # no switch waits for this backend: an ordinary request
        self.awaiting_service = None
        record = replace(awaiting, served_at=ev.at)
        for i in range(len(self.history) - 1, -1, -1):
            if self.history[i].id == record.id:
                self.history[i] = record
                break
        out.append(FirstRequestServed(record))

    def _went_down(self, role: Role) -> Cause:
        """How ``role`` went down; an active check when nothing else is known."""
        return self.health[role].down_cause or Cause.ACTIVE_CHECK

    def _up(self, role: Role) -> bool:
        return self.health[role].up is True

    def _down(self, role: Role) -> bool:
        return self.health[role].up is False

    def _gone(self, role: Role, at: float) -> bool:
        """Down, and confirmed enough to leave it while it serves: by another replica's view,
        by ``view_grace`` of this one's, or by there being no other replica."""
        h = self.health[role]
        if h.up is not False:
            return False
        if self.peers == 0 or self.peers_down[role] > 0:
            return True
        return h.down_since is not None and at - h.down_since >= self.policy.view_grace

    # ----------------------------------------------------------------------- the decision

    def _reconsider(self, at: float, out: list[Decision]) -> None:
        match self.state:
            case State.SERVING_PRIMARY:
                if self._gone("primary", at):
                    self._leave("primary", at, out)
            case State.SERVING_STANDBY:
                if self._gone("standby", at):
                    self._leave("standby", at, out)
                elif self._auto_failback_due(at):
                    hold = self.policy.failback_hold
                    reason = f"primary healthy for {hold:g}s"
                    self._start_failback(at, reason, Cause.FAILBACK, at, out)
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
        cause = self._went_down(role)
        if self._up(other(role)):
            if role == "primary":
                self._start_failover(at, reason, cause, detected, out)
            else:
                # The standby died while the primary is healthy: no time for before_failback
                # (its data source is gone), so switch home at once.
                self._switch_now("recovery", "primary", reason, cause, detected, at, out)
        else:
            self._activate(None, at, out)
            self.state = State.UNAVAILABLE

    def _recover(self, at: float, out: list[Decision]) -> None:
        """Nothing is serving: take whichever backend is up, the last one served first."""
        if self.last_served is None and self.health["primary"].up is None:
            return  # start-up: the primary's first check decides before the standby may serve
        order: list[Role] = [self.last_served] if self.last_served else []
        order += [r for r in ROLES if r not in order]
        # The backend that served last went down earlier; at start-up nothing had served.
        last = self.last_served
        cause = self.health[last].down_cause if last is not None else None
        cause = cause or Cause.RECOVERY
        for role in order:
            if not self._up(role):
                continue
            if role == "standby" and self.last_served != "standby":
                h = self.health["primary"]
                detected = h.first_failure_at if h.first_failure_at is not None else at
                reason = "primary unavailable, standby up"
                self._start_failover(at, reason, cause, detected, out)
            elif self.last_served in (None, role):
                self._activate(role, at, out)
                self.state = SERVING[role]
            else:
                reason = "standby unavailable, primary up"
                self._switch_now("recovery", role, reason, cause, at, at, out)
            return

    def _check_switch_target(self, at: float, out: list[Decision]) -> None:
        sw = self._switch
        assert sw is not None
        target = sw.record.to_role
        if not self._down(target):
            return
        detail = f"{target} went down during the switch"
        self._finish(sw, at, "abandoned", detail, out, self._went_down(target))
        source = sw.record.from_role
        if source is not None and self.active == source and self._up(source):
            self.state = SERVING[source]
        else:
            self._activate(None, at, out)
            self.state = State.UNAVAILABLE

    # ----------------------------------------------------------------------------- switches

    def _new_switch(
        self,
        kind: SwitchKind,
        to_role: Role,
        reason: str,
        cause: Cause,
        detected_at: float,
        at: float,
    ) -> SwitchRecord:
        record = SwitchRecord(
            id=self._next_switch_id,
            kind=kind,
            from_role=self.active if self.active is not None else self.last_served,
            to_role=to_role,
            reason=reason,
            cause=cause,
            detected_at=detected_at,
            started_at=at,
        )
        self._next_switch_id += 1
        return record

    def _start_failover(
        self, at: float, reason: str, cause: Cause, detected: float, out: list[Decision]
    ) -> None:
        if not self.policy.before_failover:
            self._switch_now("failover", "standby", reason, cause, detected, at, out)
            return
        record = self._new_switch("failover", "standby", reason, cause, detected, at)
        # The primary is gone: stop routing to it while the standby is fenced.
        self._activate(None, at, out)
        self.state = State.SWITCHING
        self._switch = _Switch(record, waiting_for="before_failover")
        out += [SwitchStarted(record), RunHook("before_failover", record)]

    def _start_failback(
        self, at: float, reason: str, cause: Cause, detected: float, out: list[Decision]
    ) -> None:
        if not self.policy.before_failback:
            self._switch_now("failback", "primary", reason, cause, detected, at, out)
            return
        record = self._new_switch("failback", "primary", reason, cause, detected, at)
        # The standby keeps serving while its files are copied home.
        self.state = State.SWITCHING
        self._switch = _Switch(record, waiting_for="before_failback")
        out += [SwitchStarted(record), RunHook("before_failback", record)]

    def _switch_now(
        self,
        kind: SwitchKind,
        to_role: Role,
        reason: str,
        cause: Cause,
        detected: float,
        at: float,
        out: list[Decision],
    ) -> None:
        sw = _Switch(self._new_switch(kind, to_role, reason, cause, detected, at))
        out.append(SwitchStarted(sw.record))
        self._complete(sw, at, out)

    def _complete(self, sw: _Switch, at: float, out: list[Decision]) -> None:
        role = sw.record.to_role
        self._activate(role, at, out)
        self.state = SERVING[role]
        record = self._finish(sw, at, "completed", "", out)
        self.awaiting_service = record
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
        abandoned_by: Cause | None = None,
    ) -> SwitchRecord:
        record = replace(
            sw.record,
            finished_at=at,
            outcome=outcome,
            detail=detail or sw.record.detail,
            abandoned_by=abandoned_by,
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
        # Traffic moved: an earlier switch's first request can no longer come.
        self.awaiting_service = None
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
                detail = "primary went down during failback"
                self._finish(sw, ev.at, "abandoned", detail, out, self._went_down("primary"))
                self.state = SERVING[self.active] if self.active else State.UNAVAILABLE
        else:
            detail = f"before_failback failed: {ev.detail}"
            self._finish(sw, ev.at, "abandoned", detail, out, Cause.HOOK_FAILURE)
            self.failback_blocked_until = ev.at + self.policy.failback_hold
            self.state = SERVING[self.active] if self.active else State.UNAVAILABLE

    # ----------------------------------------------------------------------------- replicas

    def _on_adopt(self, ev: Adopt, out: list[Decision]) -> None:
        self.deciding = ev.deciding
        if self._switch is not None:
            self._finish(self._switch, ev.at, "abandoned", "another replica decided", out)
        self.pinned_to_standby = ev.pinned and ev.role == "standby"
        self._activate(ev.role, ev.at, out)
        self.state = State.UNAVAILABLE if ev.role is None else SERVING[ev.role]

    # -------------------------------------------------------------------------------- admin

    def _on_admin_failover(self, ev: AdminFailover, out: list[Decision]) -> None:
        if not self.deciding:
            out.append(CommandRefused("this replica does not lead: the leader decides"))
        elif self.state != State.SERVING_PRIMARY:
            out.append(CommandRefused(f"failover needs state serving_primary, not {self.state}"))
        elif not self._up("standby"):
            out.append(CommandRefused("the standby is not healthy"))
        else:
            self.pinned_to_standby = True
            self._start_failover(ev.at, ev.reason, ev.cause, ev.at, out)

    def _on_admin_failback(self, ev: AdminFailback, out: list[Decision]) -> None:
        if not self.deciding:
            out.append(CommandRefused("this replica does not lead: the leader decides"))
        elif self.state != State.SERVING_STANDBY:
            out.append(CommandRefused(f"failback needs state serving_standby, not {self.state}"))
        elif not self._up("primary"):
            out.append(CommandRefused("the primary is not healthy"))
        else:
            self.failback_blocked_until = 0.0
            self.pinned_to_standby = False
            self._start_failback(ev.at, ev.reason, ev.cause, ev.at, out)
