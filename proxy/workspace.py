"""One workspace: a primary and a standby backend, the failover machine, and the I/O around it.

The machine (proxy.failover) decides; this module carries its decisions out: it points the router at
the active backend, re-sends or closes the traffic of the backend that lost it, runs hooks, asks the
health checker for an immediate probe, and tells observers (logs, metrics, the watcher's event
stream) what happened. proxy.sites holds one per workspace and routes to them by Host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from yarl import URL

from .backends import Backend
from .config import Config
from .errors import Conflict, NoBackendAvailable
from .failover import (
    Activate,
    AdminFailback,
    AdminFailover,
    Adopt,
    BackendReplaced,
    Cause,
    CheckResult,
    CommandRefused,
    Decision,
    Event,
    FailoverMachine,
    FirstRequestServed,
    HealthChanged,
    HookFinished,
    PassiveFailure,
    PeerViews,
    Policy,
    ProbeNow,
    RequestServed,
    Role,
    RunHook,
    SwitchFinished,
    SwitchRecord,
    SwitchStarted,
)
from .health import HealthChecker, ProbeSchedule, warm_up
from .hooks import run_hook
from .logs import WorkspaceLog
from .pages.view import SwitchSnapshot
from .tasks import TaskSet

__all__ = ["Consensus", "Workspace"]

log = logging.getLogger("dumont.workspace")

# RFC 6455 7.4.1: 1012 "service restart" tells the client to reconnect; 1001 "going away".
CLOSE_SWITCHED = 1012
CLOSE_SHUTDOWN = 1001
# How often a drain looks whether the last request in flight has finished.
DRAIN_POLL = 0.05

# Sees every event the machine handles and every decision it makes, in order.
Observer = Callable[[Event | Decision], None]


class Consensus(Protocol):
    """Proxy replicas (proxy.cluster): where the leader's decisions go, and the fencing token its
    hooks carry. A workspace without one decides alone, as a single proxy always did."""

    def publish(self, workspace: Workspace) -> None:
        """The leader's machine moved traffic: write its decision (in order, in the background)."""

    async def fencing_token(self, workspace: Workspace) -> int | None:
        """The token of the latest decision this replica wrote for ``workspace``, once written;
        None when it does not lead (any more): its hooks must not run."""


def _switch_fields(sw: SwitchRecord) -> dict[str, Any]:
    return {
        "switch_id": sw.id,
        "kind": sw.kind,
        "from": sw.from_role,
        "to": sw.to_role,
        "reason": sw.reason,
        "cause": sw.cause,
        "outcome": sw.outcome,
        "duration_s": None if sw.duration is None else round(sw.duration, 4),
        "detail": sw.detail,
        "abandoned_by": sw.abandoned_by,
    }


class Workspace:
    def __init__(
        self,
        config: Config,
        now: Callable[[], float] | None = None,
        *,
        name: str = "default",
        schedule: ProbeSchedule | None = None,
    ) -> None:
        """``config``: the proxy's settings as this workspace sees them (its backends and
        overrides: proxy.config.workspace_config); ``schedule``: the health-check schedule
        every workspace of the process shares."""
        if config.primary is None or config.standby is None:
            raise TypeError("a workspace needs config.primary and config.standby")
        self.name = name
        self.log = WorkspaceLog(log, name)
        self.config = config
        # Bound once: asyncio.get_running_loop() costs a system call, twice a second per backend.
        self._now = now or asyncio.get_running_loop().time
        hooks = config.hooks
        self.machine = FailoverMachine(
            Policy(
                fall=config.health.fall,
                rise=config.health.rise,
                failback=config.failback,
                failback_hold=config.failback_hold,
                before_failover=hooks.before_failover is not None,
                before_failback=hooks.before_failback is not None,
                view_grace=config.cluster.view_grace,
            )
        )
        self.backends: dict[Role, Backend] = {
            "primary": Backend("primary", config.primary, config.connect_timeout),
            "standby": Backend("standby", config.standby, config.connect_timeout),
        }
        self.tasks = TaskSet("workspace")
        self.checker = HealthChecker(
            self.backends, config.health, self.feed, self._now, self.tasks, schedule
        )
        self.observers: list[Observer] = []  # subscribed by the composition root
        # Made by the first waiter, set and dropped by the next event: with no one waiting (most
        # of the time, two health checks a second per workspace) an event costs nothing here.
        self._changed: asyncio.Event | None = None
        self._check_counts: dict[Role, int] = {"primary": 0, "standby": 0}
        self._closing = False
        # Set by proxy.cluster: this replica cannot confirm the cluster's decisions (it lost the
        # store): no routing until it can, so that it never sends anyone to a stale machine.
        self.halted = False
        self.consensus: Consensus | None = None
        # The backend whose first request a completed switch waits for (note_served).
        self._unserved: Backend | None = None

    # --------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.checker.start()

    async def close(self) -> None:
        self._closing = True  # requests still arriving get a 503, not a closed pool
        self.checker.stop()
        await self.tasks.close()
        for backend in self.backends.values():
            await backend.close()

    async def drain(self, timeout: float) -> None:
        """The workspace was deleted or replaced (its Host no longer reaches it): no more checks
        or new backend connections; requests in flight get up to ``timeout`` to finish."""
        self.checker.stop()
        for backend in self.backends.values():
            backend.pool.stop_keeping()
        deadline = self._now() + timeout
        while any(b.pool.busy_count for b in self.backends.values()) and self._now() < deadline:
            await asyncio.sleep(DRAIN_POLL)
        await self.close()

    def adopt(self, role: Role | None, deciding: bool, pinned: bool = False) -> None:
        """proxy.cluster: the cluster decided that ``role`` serves; this replica's machine
        decides from now on (it leads) or follows (the failover package's Adopt)."""
        self.feed(Adopt(self._now(), role, deciding, pinned))

    def weigh_peers(self, peers: int, down: dict[Role, int]) -> None:
        """proxy.cluster, on the leader: what the other replicas see (PeerViews)."""
        self.feed(PeerViews(self._now(), peers, down))

    def halt(self, halted: bool) -> None:
        """proxy.cluster: stop routing (the store is lost) or route again. Open WebSockets end
        with 1012: the cluster may have moved the workspace meanwhile, and the browser's
        reconnect finds whichever replica can tell where it went."""
        if halted == self.halted:
            return
        self.halted = halted
        if halted:
            for backend in self.backends.values():
                self.tasks.spawn(
                    backend.close_websockets(CLOSE_SWITCHED, b"proxy lost its cluster"),
                    name=f"close-websockets-{backend.role}",
                )
        self.nudge()

    async def close_websockets(self, code: int = CLOSE_SHUTDOWN) -> None:
        for backend in self.backends.values():
            await backend.close_websockets(code, b"proxy shutting down")

    # ------------------------------------------------------------------------ event intake

    def feed(self, event: Event) -> list[Decision]:
        decisions = self.machine.handle(event)
        awaiting = self.machine.awaiting_service
        self._unserved = None if awaiting is None else self.backends[awaiting.to_role]
        if isinstance(event, CheckResult):
            self._check_counts[event.role] += 1
        for observe in self.observers:
            observe(event)
        for decision in decisions:
            self._carry_out(decision)
            for observe in self.observers:
                observe(decision)
        self.nudge()
        return decisions

    def nudge(self) -> None:
        """Wake everyone waiting for news (requests waiting for a backend, the IDE's event
        streams); every event does, and so does a park report (proxy.ide_view)."""
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    def note_served(self, backend: Backend, status: int) -> None:
        """``backend`` answered a request with ``status``. Called by the data plane for every
        request, so it costs one comparison until a switch waits for its first answer below 500:
        that one becomes the machine's RequestServed (the end of the switch, as a user sees it)."""
        if backend is self._unserved and status < 500:
            self.feed(RequestServed(backend.role, self._now()))

    def report_passive_failure(self, backend: Backend, detail: str) -> None:
        if self.backends.get(backend.role) is backend:
            self.feed(PassiveFailure(backend.role, self._now(), detail))

    # ---------------------------------------------------------------------------- decisions

    def _carry_out(self, decision: Decision) -> None:
        match decision:
            case Activate(role=role, previous=previous):
                self.log.warning(
                    "routing to %s (was %s)",
                    role or "nothing",
                    previous or "nothing",
                    extra={"fields": {"event": "activate", "to": role, "from": previous}},
                )
                if previous is not None:
                    lost = self.backends[previous]
                    if rerouted := lost.reroute_waiting():
                        self.log.info(
                            "re-sending %d waiting request(s) from %s", rerouted, previous
                        )
                    self.tasks.spawn(
                        lost.close_websockets(CLOSE_SWITCHED, b"backend switched"),
                        name=f"close-websockets-{previous}",
                    )
                if self.consensus is not None and self.machine.deciding:
                    self.consensus.publish(self)
            case ProbeNow(role=role):
                self.checker.probe_now(role)
            case RunHook(hook=hook, switch=switch):
                command = getattr(self.config.hooks, hook)
                if command is not None:
                    self.tasks.spawn(self._run_hook(hook, command, switch), name=f"hook-{hook}")
            case HealthChanged(role=role, up=up, reason=reason, cause=cause):
                if up and self.config.health.warmup_path is not None:
                    self.tasks.spawn(
                        warm_up(
                            self.backends[role],
                            self.config.health.warmup_path,
                            self.log,
                            self.checker.schedule.warmups,
                        ),
                        name=f"warm-up-{role}",
                    )
                self.log.warning(
                    "%s is %s: %s",
                    role,
                    "up" if up else "down",
                    reason,
                    extra={
                        "fields": {
                            "event": "health_changed",
                            "role": role,
                            "up": up,
                            "reason": reason,
                            "cause": cause,
                        }
                    },
                )
            case SwitchStarted(switch=sw):
                self.log.warning(
                    "%s %s -> %s started: %s",
                    sw.kind,
                    sw.from_role,
                    sw.to_role,
                    sw.reason,
                    extra={"fields": {"event": "switch_started", **_switch_fields(sw)}},
                )
            case SwitchFinished(switch=sw):
                self.log.warning(
                    "%s %s -> %s %s in %.3fs%s",
                    sw.kind,
                    sw.from_role,
                    sw.to_role,
                    sw.outcome,
                    sw.duration or 0.0,
                    f": {sw.detail}" if sw.detail else "",
                    extra={"fields": {"event": "switch_finished", **_switch_fields(sw)}},
                )
            case FirstRequestServed(switch=sw):
                assert sw.served_at is not None  # the machine sets it on this decision
                self.log.info(
                    "%s served its first request %.3fs after the trouble began",
                    sw.to_role,
                    sw.served_at - sw.detected_at,
                    extra={
                        "fields": {
                            "event": "first_request_served",
                            **_switch_fields(sw),
                            "served_after_s": round(sw.served_at - sw.detected_at, 4),
                        }
                    },
                )
            case CommandRefused():
                pass

    async def _run_hook(self, hook: Any, command: str, switch: SwitchRecord) -> None:
        token: int | None = None
        if self.consensus is not None:
            token = await self.consensus.fencing_token(self)
            if token is None:
                self.log.warning("hook %s not run: this replica no longer leads", hook)
                return
        env = {
            "DUMONT_WORKSPACE": self.name,
            "DUMONT_EVENT": hook,
            "DUMONT_FROM": switch.from_role or "",
            "DUMONT_TO": switch.to_role,
            "DUMONT_FROM_URL": str(self.backends[switch.from_role].url) if switch.from_role else "",
            "DUMONT_TO_URL": str(self.backends[switch.to_role].url),
            "DUMONT_REASON": switch.reason,
            "DUMONT_CAUSE": switch.cause,
            "DUMONT_SWITCH_ID": str(switch.id),
            "DUMONT_PRIMARY_URL": str(self.backends["primary"].url),
            "DUMONT_STANDBY_URL": str(self.backends["standby"].url),
        }
        if token is not None:
            env["DUMONT_FENCING_TOKEN"] = str(token)
        outcome = await run_hook(command, env, self.config.hooks.timeout)
        level = logging.INFO if outcome.ok else logging.ERROR
        self.log.log(
            level,
            "hook %s %s in %.2fs: %s",
            hook,
            "ok" if outcome.ok else "failed",
            outcome.seconds,
            outcome.detail,
            extra={
                "fields": {
                    "event": "hook_finished",
                    "hook": hook,
                    "ok": outcome.ok,
                    "seconds": round(outcome.seconds, 3),
                    "detail": outcome.detail,
                    "switch_id": switch.id,
                    "reason": switch.reason,
                    "cause": switch.cause,
                }
            },
        )
        self.feed(HookFinished(hook, switch.id, outcome.ok, self._now(), outcome.detail))

    # ------------------------------------------------------------------------------ routing

    def active_backend(self) -> Backend | None:
        role = self.machine.active
        return self.backends[role] if role is not None else None

    # The data plane's Router (proxy.dataplane.router): ready_backend, acquire, epoch, ...

    def ready_backend(self) -> Backend | None:
        """The backend to send a request to right now, without waiting; None during a switch."""
        role = self.machine.active
        return None if role is None or self._closing or self.halted else self.backends[role]

    @property
    def epoch(self) -> int:
        return self.machine.epoch

    async def acquire(self, wait: float) -> Backend:
        """The backend to use now, waiting up to ``wait`` seconds for a switch to finish."""
        backend = self.ready_backend()
        if backend is not None:
            return backend
        if self._closing:
            raise NoBackendAvailable("the proxy is shutting down")
        deadline = self._now() + wait
        while (remaining := deadline - self._now()) > 0:
            await self.changed(remaining)
            if (backend := self.ready_backend()) is not None:
                return backend
        raise NoBackendAvailable(retry_after=max(1, round(self.config.health.interval * 2)))

    async def changed(self, timeout: float) -> bool:
        """Wait until the next event is handled; False on timeout."""
        if self._changed is None:
            self._changed = asyncio.Event()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_for_verdict(self, backend: Backend, timeout: float) -> None:
        """After a passive failure: wait until that backend was probed again or traffic moved."""
        seen = self._check_counts[backend.role]
        deadline = self._now() + timeout
        while (remaining := deadline - self._now()) > 0:
            if self.machine.active != backend.role or self._check_counts[backend.role] > seen:
                return
            await self.changed(remaining)

    # --------------------------------------------- the pages' SwitchView (proxy.pages.view)

    def snapshot(self) -> SwitchSnapshot:
        m = self.machine
        return SwitchSnapshot(
            epoch=m.epoch,
            state=m.state.value,
            active=m.active,
            target=m.target,
            primary_healthy=m.health["primary"].up is True,
            standby_healthy=m.health["standby"].up is True,
            failback_available=m.failback_available,
        )

    async def request_failback(self) -> None:
        self.failback("user: failback from the IDE", Cause.ADMIN)

    # -------------------------------------------------------------------------------- admin

    def _command(self, event: AdminFailover | AdminFailback) -> SwitchRecord | None:
        for decision in self.feed(event):
            if isinstance(decision, CommandRefused):
                raise Conflict(decision.reason)
        return self.machine.history[-1] if self.machine.history else None

    def failover(
        self, reason: str = "admin: failover requested", cause: Cause = Cause.ADMIN
    ) -> None:
        self._command(AdminFailover(self._now(), reason, cause))

    def failback(
        self, reason: str = "admin: failback requested", cause: Cause = Cause.ADMIN
    ) -> None:
        self._command(AdminFailback(self._now(), reason, cause))

    async def replace_backend(self, role: Role, url: URL) -> None:
        other = self.backends["standby" if role == "primary" else "primary"]
        if url.origin() == other.url.origin():
            raise Conflict(f"{url} is already the {other.role}")
        await self.backends[role].replace_url(url)
        self.log.warning("%s now points at %s", role, url)
        self.feed(BackendReplaced(role, self._now(), str(url)))

    # ------------------------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        m = self.machine
        now = self._now()
        backends = {}
        for role, backend in self.backends.items():
            h = m.health[role]
            backends[role] = {
                "name": backend.name,
                "url": str(backend.url),
                "healthy": h.up,
                "last_check_latency_ms": None
                if h.last_latency is None
                else round(h.last_latency * 1000, 3),
                "last_check_age_s": None
                if h.last_check_at is None
                else round(now - h.last_check_at, 3),
                "last_detail": h.last_detail,
                "down_cause": h.down_cause,
                "fail_streak": h.fail_streak,
                "ok_streak": h.ok_streak,
                "open_websockets": len(backend.websockets),
            }
        return {
            "state": str(m.state),
            "active": m.active,
            "target": m.target,
            "epoch": m.epoch,
            "failback": self.config.failback,
            "failback_available": m.failback_available,
            "pinned_to_standby": m.pinned_to_standby,
            "backends": backends,
            "switches": [
                {
                    "id": sw.id,
                    "kind": sw.kind,
                    "from": sw.from_role,
                    "to": sw.to_role,
                    "reason": sw.reason,
                    "cause": sw.cause,
                    "outcome": sw.outcome,
                    "detail": sw.detail,
                    "duration_s": None if sw.duration is None else round(sw.duration, 4),
                    "age_s": round(now - sw.started_at, 3),
                }
                for sw in reversed(m.history)
            ],
        }
