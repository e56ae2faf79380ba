"""What the dashboard and ``dumont-proxy status`` show: the workspace's status and the rest.

``Board.state()`` is the one JSON both read (``/dashboard/state`` and ``/admin/status``): the
workspace's status, plus the sync report, tip A/B counts, the savings panel and each backend's
recent health-check latencies for the sparklines.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.failover import CheckResult, Decision, Event, Role
from proxy.metrics import ProxyMetrics
from proxy.observe import TipSnapshot, TipSource
from proxy.park_status import ParkStatus
from proxy.sync_report import SyncReport
from proxy.workspace import Workspace

from .savings import SavingsLedger, savings

__all__ = ["HISTORY", "Board", "tip_table"]

log = logging.getLogger("dumont.sync")

HISTORY = 90  # health checks kept per backend for the sparkline


def tip_table(counts: TipSnapshot | None) -> dict[str, dict[str, float | int | None]] | None:
    if counts is None:
        return None
    table: dict[str, dict[str, float | int | None]] = {}
    for variant, numbers in sorted(counts.items()):
        shown, clicked = numbers.impressions, numbers.clicks
        rate = round(clicked / shown, 4) if shown else None
        table[variant] = {"impressions": shown, "clicks": clicked, "click_rate": rate}
    return table


@dataclass
class Board:
    workspace: Workspace
    tips: TipSource | None = None  # the transition page's A/B counts (proxy.pages.TipBook)
    sync: SyncReport = field(default_factory=SyncReport)
    ledger: SavingsLedger = field(default_factory=SavingsLedger)
    park: ParkStatus = field(default_factory=ParkStatus)
    metrics: ProxyMetrics | None = None
    latencies: dict[Role, deque[float | None]] = field(
        default_factory=lambda: {r: deque(maxlen=HISTORY) for r in ("primary", "standby")}
    )

    def __post_init__(self) -> None:
        # Checks may have run before the control app subscribed the board: keep the last one.
        for role, health in self.workspace.machine.health.items():
            if health.last_check_at is not None:
                latency = health.last_latency
                self.latencies[role].append(None if latency is None else round(latency * 1000, 3))

    def tip_counts(self) -> TipSnapshot | None:
        return None if self.tips is None else self.tips.snapshot()

    def observers(self) -> list[Callable[[Event | Decision], None]]:
        """What to subscribe to the workspace: the board, its savings ledger, its metrics."""
        found: list[Callable[[Event | Decision], None]] = [self.observe, self.ledger.observe]
        if self.metrics is not None:
            found.insert(0, self.metrics.observe)
        return found

    def observe(self, item: Event | Decision) -> None:
        if isinstance(item, CheckResult):
            # A failed check has no latency: None draws a gap in the sparkline.
            ms = None if item.latency is None else round(item.latency * 1000, 3)
            self.latencies[item.role].append(ms)

    def log_sync_change(self, before: str, after: str, lag: float | None) -> None:
        lag_text = "not measured" if lag is None else f"{lag:.3f}s"
        calm = after in ("syncing", "fenced", "reverse_syncing")
        log.log(
            logging.INFO if calm else logging.WARNING,
            "sync state %s -> %s (lag %s), reported by provisioning",
            before,
            after,
            lag_text,
            extra={"fields": {"event": "sync_changed", "from": before, "to": after, "lag_s": lag}},
        )

    def savings(self, park: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The savings panel: the standby's arithmetic and what parking the GPU kept (issue 18).
        Also one cell of the overview's row (issue 15); ``park`` is the park's JSON when the
        caller has it already."""
        prices = self.workspace.config.prices
        parked: Mapping[str, Any] = self.park.as_json() if park is None else park
        found = savings(prices, self.ledger)
        # Issue 18: parked hours x the GPU's price is money the user kept.
        saved = parked["gpu_cost_saved"]
        if saved is None and prices.gpu_per_hour is not None:
            # No park reported the rented GPU's price (a provider without one): the configured
            # price is the next best truth, and the same one the standby's share is measured by.
            saved = round(parked["parked_hours"] * prices.gpu_per_hour, 4)
        found["gpu_parked_hours"] = parked["parked_hours"]
        found["gpu_cost_saved_parked"] = saved
        return found

    def state(self) -> dict[str, Any]:
        status = self.workspace.status()
        for role, backend in status["backends"].items():
            backend["latency_history_ms"] = list(self.latencies[role])
        status["sync"] = self.sync.as_json()
        status["tips"] = tip_table(self.tip_counts())
        park = self.park.as_json()
        status["savings"] = self.savings(park)
        status["park"] = park
        status["metrics"] = self.metrics is not None
        # Whether the dashboard must ask for a token (a loopback listener may run without one).
        status["admin_token_required"] = bool(self.workspace.config.admin_token)
        return status
