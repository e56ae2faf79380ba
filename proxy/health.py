"""Active health checks: GET the health path on each backend, every interval or when asked.

code-server's /healthz answers {"status": "alive"|"expired"}; ``expired`` means idle, not dead, so
any 2xx counts as up. One probe is in flight per backend at a time; ``probe_now`` skips the wait
(after a passive failure, or to confirm a first failed check at once).

A probe is one request over a kept-alive connection of the backend's own probe pool, driven by
callbacks: no client session, no task, no future and no timer of its own per probe
(bench/probes.py measures its CPU). Starts and deadlines go on one ``ProbeSchedule``, a grid of
BATCH_SLOT slots with a single loop timer, which every checker of the process can share. After
the first check, each backend's checks keep a phase of their own within the interval, so a
thousand backends are not probed in one burst.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
import zlib
from collections.abc import Callable
from typing import Any

import aiohttp

from .backends import Backend
from .config import HealthConfig
from .dataplane.upstream import ConnectFailed, ResponseHead, UpstreamConnection, UpstreamFailure
from .failover import CheckResult, Role
from .tasks import TaskSet

log = logging.getLogger("dumont.health")

__all__ = ["HealthChecker", "ProbeSchedule", "phase", "probe_request", "warm_up"]

# Due times are rounded up to this grid (seconds): at most this much later than the interval.
BATCH_SLOT = 0.02
WARMUPS_AT_ONCE = 8
# Generous: the point is that the backend does its slow first-request work now, not that we wait.
WARMUP_TIMEOUT = 120.0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connect failed: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, ConnectFailed) and exc.timed_out:
        return "timed out"
    if isinstance(exc, UpstreamFailure):
        return exc.detail
    return f"{type(exc).__name__}: {exc}"


def probe_request(backend: Backend, path: str) -> bytes:
    return (
        f"GET {backend.path_prefix}{path} HTTP/1.1\r\nHost: {backend.host_header}\r\n"
        "User-Agent: dumont-health\r\nAccept: */*\r\n\r\n"
    ).encode("latin-1")


def phase(backend: Backend, interval: float) -> float:
    """A stable offset within the interval for this backend's checks (spreads many backends)."""
    return (zlib.crc32(str(backend.url).encode()) % 1000) / 1000 * interval


async def warm_up(
    backend: Backend,
    path: str,
    logger: logging.Logger | logging.LoggerAdapter[Any] = log,
    limit: asyncio.Semaphore | None = None,
) -> None:
    """One GET so that a backend's lazy start-up (code-server's VS Code server) happens now.

    Whatever it answers (code-server redirects to its login page) is fine; a failure only means
    the first user pays the start-up after all, so it is logged, never raised. ``limit``: how
    many run at once (a thousand workspaces coming up together would otherwise open two
    thousand sessions while their first health checks run).
    """
    if limit is not None:
        async with limit:
            await warm_up(backend, path, logger)
        return
    started = time.perf_counter()
    # A session of its own, closed here even when the task is cancelled at shutdown: the request
    # may take seconds (that is the point), must not hold one of the health checks' two pooled
    # connections meanwhile, and must not be left behind when the backend's sessions are replaced.
    try:
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
            session.get(
                backend.target(path),
                timeout=aiohttp.ClientTimeout(total=WARMUP_TIMEOUT),
                allow_redirects=False,
            ) as response,
        ):
            await response.read()
            outcome = f"HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        outcome = _describe(exc)
    logger.info(
        "warmed up %s with GET %s: %s in %.2fs",
        backend.role,
        path,
        outcome,
        time.perf_counter() - started,
        extra={"fields": {"event": "warm_up", "role": backend.role, "outcome": outcome}},
    )


class ProbeSchedule:
    """When each check starts and when its probe times out, on a grid of BATCH_SLOT slots.

    One loop timer, for the earliest slot with anything in it, serves every check of every
    checker sharing the schedule: with a timer per probe, creating and cancelling them cost more
    than the probes. Entries are never removed; a check told of a slot it no longer waits for
    (answered in time, asked to probe at once) ignores it.
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._slots: dict[int, list[tuple[_Checks, int]]] = {}
        self._order: list[int] = []  # a heap of the keys of _slots
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot = 0
        self.warmups = asyncio.Semaphore(WARMUPS_AT_ONCE)  # proxy.health.warm_up's limit
        self._running = False  # in _run, which arms the timer once at its end

    def at(self, when: float, checks: _Checks) -> int:
        """Tell ``checks`` of its slot at (or just after) loop time ``when``; returns the slot."""
        slot = math.ceil(when / BATCH_SLOT)
        entries = self._slots.get(slot)
        if entries is None:
            entries = self._slots[slot] = []
            heapq.heappush(self._order, slot)
        entries.append((checks, slot))
        if not self._running and (self._timer is None or slot < self._timer_slot):
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(slot * BATCH_SLOT, self._run)
            self._timer_slot = slot
        return slot

    def _run(self) -> None:
        self._timer = None
        # Rounding may wake the loop a hair before the slot's time: a slot due now counts.
        now = math.floor(self.loop.time() / BATCH_SLOT + 1e-6)
        order = self._order
        self._running = True
        try:
            while order and order[0] <= now:
                for checks, slot in self._slots.pop(heapq.heappop(order)):
                    try:
                        checks.slot_due(slot)
                    except Exception:  # one check's trouble must not stop everyone's checks
                        log.exception("health check of %s failed", checks.role)
        finally:
            self._running = False
        if order:
            self._timer_slot = order[0]
            self._timer = self.loop.call_at(order[0] * BATCH_SLOT, self._run)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._slots.clear()
        self._order.clear()


class _Checks:
    """One backend's checks: at most one probe in flight, the next start and the deadline on
    the shared ProbeSchedule.

    Driven by callbacks (a ResponseSink on the probe pool's connection, the schedule for the
    deadline and the next check), not a task per check: a thousand workspaces mean two thousand
    probes a second. A task is started only to open a connection.
    """

    def __init__(self, checker: HealthChecker, role: Role) -> None:
        self.checker = checker
        self.role = role
        self.loop = asyncio.get_running_loop()
        self.busy = False
        self.stopped = False
        self.requested = False
        self.status = 0
        self.started = self.began = 0.0
        self.next_slot = -1  # the slot the next check starts in (-1: none)
        self.deadline_slot = -1  # the slot the probe in flight times out in (-1: none)
        self.soon: asyncio.Handle | None = None  # a check asked for at once
        self.connecting: asyncio.Task[None] | None = None
        self.conn: UpstreamConnection | None = None
        self.request = b""  # the probe's bytes, made once per backend
        self.request_for: Backend | None = None
        self.offset = 0.0  # this backend's phase within the interval
        self.phase_for: Backend | None = None

    def slot_due(self, slot: int) -> None:
        if self.stopped:
            return
        if self.busy:
            if slot == self.deadline_slot:
                self._expired()
        elif slot == self.next_slot:
            self.fire()

    def fire(self) -> None:
        self.soon = None
        if self.busy or self.stopped:
            return  # one probe in flight at a time
        self.next_slot = -1
        self.busy, self.requested, self.status = True, False, 0
        self.started, self.began = time.perf_counter(), self.loop.time()
        checker = self.checker
        backend = checker.backends[self.role]
        self.deadline_slot = checker.schedule.at(self.began + checker.settings.timeout, self)
        conn = backend.probe_pool.take_idle()
        if conn is None:
            self.connecting = self.checker.tasks.spawn(
                self._connect(backend), name=f"health-connect-{self.role}"
            )
        else:
            self._send(conn, backend)

    async def _connect(self, backend: Backend) -> None:
        try:
            conn = await backend.probe_pool.connect()
        except UpstreamFailure as failure:
            self.connecting = None
            self._done(False, _describe(failure))
            return
        self.connecting = None
        if not self.busy:  # timed out meanwhile
            conn.close()
            return
        self._send(conn, backend)

    def _send(self, conn: UpstreamConnection, backend: Backend) -> None:
        self.conn = conn
        if self.request_for is not backend:  # the first probe, or the role was re-pointed
            self.request = probe_request(backend, self.checker.settings.path)
            self.request_for = backend
        conn.send(self, self.request)

    # ResponseSink
    def head_received(self, head: ResponseHead) -> None:
        self.status = head.status

    def response_body(self, data: bytes) -> None:
        return None

    def response_complete(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.pool.release(conn)
        ok = 200 <= self.status < 300
        self._done(ok, "" if ok else f"HTTP {self.status}")

    def upstream_failed(self, failure: UpstreamFailure) -> None:
        self.conn = None
        self._done(False, _describe(failure))

    def upstream_writable(self, writable: bool) -> None:
        return None

    def _expired(self) -> None:
        self.deadline_slot = -1
        self._abandon()
        self._done(False, "timed out")

    def _abandon(self) -> None:
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.detach()

    def _done(self, ok: bool, detail: str) -> None:
        if not self.busy:
            return
        self.busy = False
        self.deadline_slot = -1
        latency = time.perf_counter() - self.started
        checker = self.checker
        result = CheckResult(self.role, ok, checker.now(), latency if ok else None, detail)
        try:
            checker.report(result)
        except Exception:  # a broken observer must not end this backend's checks
            log.exception("reporting the health check of %s failed", self.role)
        if self.stopped:
            return  # the report stopped the checker (shutdown)
        if self.requested:
            if self.soon is None:  # (a probe_now during the report asked for it already)
                self.soon = self.loop.call_soon(self.fire)
            return
        # The next check is at this backend's own phase of the interval, not one interval after
        # this one began: a late loop would otherwise start every overdue check in the same
        # turn, and they would stay bunched from then on (bench/workspaces.py saw 87 % of a
        # thousand backends' checks in one tenth of the second).
        interval = checker.settings.interval
        backend = checker.backends[self.role]
        if self.phase_for is not backend:  # the first check, or the role was re-pointed
            self.offset, self.phase_for = phase(backend, interval), backend
        offset = self.offset
        now = self.loop.time()
        due = (math.floor((now - offset) / interval) + 1) * interval + offset
        # Checks due in the same slot start in one turn of the loop, and their answers tend to
        # arrive in one: a wake-up costs more than the probe itself at a thousand backends.
        self.next_slot = checker.schedule.at(due, self)

    def probe_now(self) -> None:
        if self.stopped:
            return
        self.requested = True
        if not self.busy and self.soon is None:
            self.next_slot = -1  # the scheduled start is now void
            self.soon = self.loop.call_soon(self.fire)

    def stop(self) -> None:
        self.busy = False
        self.stopped = True
        if self.soon is not None:
            self.soon.cancel()
            self.soon = None
        self.next_slot = self.deadline_slot = -1
        self._abandon()


class HealthChecker:
    def __init__(
        self,
        backends: dict[Role, Backend],
        settings: HealthConfig,
        report: Callable[[CheckResult], object],
        now: Callable[[], float],
        tasks: TaskSet,
        schedule: ProbeSchedule | None = None,
    ) -> None:
        """``schedule``: one shared by every checker of the process (else one of its own)."""
        self.backends = backends
        self.settings = settings
        self.report = report
        self.now = now
        self.tasks = tasks
        self._own_schedule = schedule is None
        self.schedule = ProbeSchedule() if schedule is None else schedule
        self._checks: dict[Role, _Checks] = {}

    def start(self) -> None:
        for role in self.backends:
            checks = self._checks[role] = _Checks(self, role)
            checks.fire()

    def probe_now(self, role: Role) -> None:
        """Check this backend now (after a passive failure, or to confirm a first failure)."""
        if role in self._checks:
            self._checks[role].probe_now()

    def stop(self) -> None:
        for checks in self._checks.values():
            checks.stop()
        if self._own_schedule:
            self.schedule.close()
