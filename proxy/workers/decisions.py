"""What a worker knows of the controller's decisions, and the Router it routes by.

A ``RouteDecision`` is the whole of what the data plane needs from the failover machine: who is
active, the epoch, where each role points, and how many health checks of each role the controller
has handled (``wait_for_verdict`` waits for the next one). The controller sends one whenever it
changes; ``RemoteRouter.apply`` then does what ``Workspace`` does in a single process on a switch:
waiting idempotent requests are re-sent, WebSockets to the backend that lost are closed with 1012.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from yarl import URL

from proxy.backends import Backend
from proxy.config import Config
from proxy.errors import NoBackendAvailable
from proxy.failover import Role
from proxy.observe import TrafficObserver
from proxy.tasks import TaskSet
from proxy.workspace import CLOSE_SHUTDOWN, CLOSE_SWITCHED, Workspace

__all__ = ["RemoteRouter", "RouteDecision", "TrafficBatch", "decision_of", "replay_traffic"]

log = logging.getLogger("dumont.worker")
ROLES: tuple[Role, Role] = ("primary", "standby")


@dataclass(frozen=True, slots=True)
class RouteDecision:
    active: Role | None
    epoch: int
    urls: tuple[str, str]  # primary, standby
    checks: tuple[int, int]  # health checks handled: primary, standby
    closing: bool = False


def decision_of(workspace: Workspace) -> RouteDecision:
    backends = workspace.backends
    return RouteDecision(
        active=workspace.machine.active,
        epoch=workspace.epoch,
        urls=(str(backends["primary"].url), str(backends["standby"].url)),
        checks=(workspace.check_count("primary"), workspace.check_count("standby")),
    )


class TrafficBatch:
    """A TrafficObserver that keeps what it is told until the worker sends it to the controller."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, ...]] = []

    def request_done(
        self,
        backend: str | None,
        method: str,
        status: int,
        seconds: float,
        bytes_up: int,
        bytes_down: int,
    ) -> None:
        self.entries.append(("request", backend, method, status, seconds, bytes_up, bytes_down))

    def websocket_opened(self, backend: str) -> None:
        self.entries.append(("ws_opened", backend))

    def websocket_closed(self, backend: str, bytes_up: int, bytes_down: int) -> None:
        self.entries.append(("ws_closed", backend, bytes_up, bytes_down))

    def take(self) -> list[tuple[Any, ...]]:
        entries, self.entries = self.entries, []
        return entries


def replay_traffic(entries: list[tuple[Any, ...]], traffic: TrafficObserver) -> None:
    """The controller's side of TrafficBatch: the same calls, on the real observer."""
    for kind, *fields in entries:
        if kind == "request":
            traffic.request_done(*fields)
        elif kind == "ws_opened":
            traffic.websocket_opened(*fields)
        elif kind == "ws_closed":
            traffic.websocket_closed(*fields)


class RemoteRouter:
    """The data plane's Router in a worker: the last decision the controller sent."""

    def __init__(self, config: Config, send: Any, tasks: TaskSet) -> None:
        self.config = config
        self._send = send  # (message tuple) -> None, to the controller
        self._tasks = tasks
        self.backends: dict[Role, Backend] = {
            "primary": Backend("primary", config.primary, config.connect_timeout),
            "standby": Backend("standby", config.standby, config.connect_timeout),
        }
        self.decision: RouteDecision | None = None
        self._changed = asyncio.Event()

    @property
    def epoch(self) -> int:
        return self.decision.epoch if self.decision is not None else 0

    def ready_backend(self) -> Backend | None:
        decision = self.decision
        if decision is None or decision.active is None or decision.closing:
            return None
        return self.backends[decision.active]

    async def acquire(self, wait: float) -> Backend:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            if (backend := self.ready_backend()) is not None:
                return backend
            if self.decision is not None and self.decision.closing:
                raise NoBackendAvailable("the proxy is shutting down")
            remaining = deadline - loop.time()
            if remaining <= 0:
                retry = max(1, round(self.config.health.interval * 2))
                raise NoBackendAvailable(retry_after=retry)
            await self._next_change(remaining)

    def report_passive_failure(self, backend: Backend, detail: str) -> None:
        if self.backends.get(backend.role) is backend:
            self._send(("passive", backend.role, detail))

    async def wait_for_verdict(self, backend: Backend, timeout: float) -> None:
        index = ROLES.index(backend.role)
        seen = self.decision.checks[index] if self.decision is not None else 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            decision = self.decision
            if decision is not None and (
                decision.active != backend.role or decision.checks[index] > seen
            ):
                return
            await self._next_change(remaining)

    async def _next_change(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return

    def apply(self, decision: RouteDecision) -> None:
        """A new decision from the controller: re-point, re-send, close, wake the waiters."""
        previous = self.decision
        for role, url in zip(ROLES, decision.urls, strict=True):
            backend = self.backends[role]
            if str(backend.url) != url:
                old = (backend.pool, backend.probe_pool)
                backend.point_at(URL(url))
                for pool in old:
                    pool.close()
        self.decision = decision
        lost = previous.active if previous is not None else None
        if lost is not None and lost != decision.active:
            backend = self.backends[lost]
            if rerouted := backend.reroute_waiting():
                log.info("re-sending %d waiting request(s) from %s", rerouted, lost)
            code = CLOSE_SHUTDOWN if decision.closing else CLOSE_SWITCHED
            self._tasks.spawn(
                backend.close_websockets(code, b"backend switched"), name=f"close-ws-{lost}"
            )
        self._changed.set()
        self._changed = asyncio.Event()

    async def close(self) -> None:
        for backend in self.backends.values():
            await backend.close()
