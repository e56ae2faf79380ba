"""What the proxy tells observers (metrics, logs, dashboards) about traffic and decisions.

The forwarding code calls a ``TrafficObserver`` once per request and per WebSocket, never per
chunk, so an observer's cost stays bounded per request. Failover events and decisions reach
``Workspace.observers`` (see proxy.workspace).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

__all__ = ["NullTrafficObserver", "TipSnapshot", "TipSource", "TrafficObserver", "VariantCounts"]

Direction = Literal["upstream", "downstream"]


class TrafficObserver(Protocol):
    def request_done(
        self,
        backend: str | None,
        method: str,
        status: int,
        seconds: float,
        bytes_up: int,
        bytes_down: int,
    ) -> None:
        """One HTTP request finished. ``backend`` is "gpu"/"cpu", or None if none answered."""

    def websocket_opened(self, backend: str) -> None: ...

    def websocket_closed(self, backend: str, bytes_up: int, bytes_down: int) -> None: ...


class NullTrafficObserver:
    """The default: observes nothing, costs one call."""

    def request_done(
        self,
        backend: str | None,
        method: str,
        status: int,
        seconds: float,
        bytes_up: int,
        bytes_down: int,
    ) -> None:
        return None

    def websocket_opened(self, backend: str) -> None:
        return None

    def websocket_closed(self, backend: str, bytes_up: int, bytes_down: int) -> None:
        return None


class VariantCounts(Protocol):
    """One tip variant's counts (proxy.pages.TipCounts)."""

    @property
    def impressions(self) -> int: ...

    @property
    def clicks(self) -> int: ...


TipSnapshot = Mapping[str, VariantCounts]
"""variant -> its impressions and clicks, at one moment: what ``TipSource.snapshot()`` returns."""


class TipSource(Protocol):
    """The transition page's tip A/B counts (proxy.pages.TipBook), read by metrics and dashboard."""

    def snapshot(self) -> TipSnapshot: ...
