"""The narrow seam between the data plane and whatever decides where traffic goes.

The data plane asks only this: the backend to use now, or to wait for one during a switch; it
reports passive failures and waits for the verdict they trigger, and each answer's status (the
first good one after a switch ends it); it reads the decision's epoch (the watcher compares it).
Today the in-process Workspace implements it; a controller feeding worker processes, or etcd
shared by replicas, would implement the same methods.

One proxy serves many workspaces (issue 15): a ``Directory`` gives the ``Route`` a request's Host
names (proxy.sites implements both), and the route its Router.

With sign-in at the proxy (issue 17) a ``Gate`` is asked first (proxy.auth implements it); without
it there is no gate, and the data plane does nothing more than before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxy.backends import Backend
    from proxy.observe import TrafficObserver

    from .exchange import Destination
    from .messages import RequestHead

__all__ = ["Directory", "Gate", "Route", "Router"]


class Router(Protocol):
    @property
    def epoch(self) -> int:
        """Bumped by every switch: pages served under an older epoch reload."""

    def ready_backend(self) -> Backend | None:
        """The backend serving now, or None while a switch is under way (then ``acquire``)."""

    async def acquire(self, wait: float) -> Backend:
        """The backend to use, waiting up to ``wait`` seconds; raises NoBackendAvailable."""

    def report_passive_failure(self, backend: Backend, detail: str) -> None: ...

    def note_served(self, backend: Backend, status: int) -> None:
        """``backend`` answered with ``status``: called for every answer, so it must be cheap."""

    async def wait_for_verdict(self, backend: Backend, timeout: float) -> None:
        """After a passive failure: until that backend was probed again or traffic moved."""


class Route(Protocol):
    """One workspace, as the data plane forwards to it."""

    @property
    def router(self) -> Router: ...

    @property
    def traffic(self) -> TrafficObserver: ...

    @property
    def navigation(self) -> Destination:
        """Where a page load goes: it never waits for a switch (the transition page does)."""

    @property
    def call(self) -> Destination:
        """Where any other request goes: it waits up to the switch wait."""

    @property
    def switch_wait(self) -> float: ...


class Directory(Protocol):
    def for_host(self, raw: bytes | str | None) -> Route | None:
        """The workspace a raw Host value names, or None (the request gets a 404)."""


class Gate(Protocol):
    def refusal(self, head: RequestHead, host: str | None) -> bytes | None:
        """None lets the request through; else the ``X-Dumont-...`` header line with which the
        request goes to the pages app instead, which answers it (a redirect to sign in, a 401, a
        403 page). Called for every request, so it must be cheap."""
