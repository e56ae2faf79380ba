"""The file sync as the proxy knows it: the last report provisioning sent (``PUT /admin/sync``).

The proxy never imports provisioning, so the wire's states are spelled here as well as in
provisioning.proxy_admin.SyncState (what provisioning may send); tests/metrics/test_sync_report.py
holds the two to one list. Before any report the proxy knows nothing: ``unknown``.
Not provisioning.sync.SyncStatus: that one is lsyncd's own state, read over SSH on the machines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["SYNC_STATES", "SyncReport", "SyncReportState"]

SyncReportState = Literal["unknown", "syncing", "fenced", "reverse_syncing", "degraded", "stopped"]
SYNC_STATES: tuple[SyncReportState, ...] = get_args(SyncReportState)


@dataclass
class SyncReport:
    """The last sync report from provisioning; ``unknown`` until one arrives."""

    state: SyncReportState = "unknown"
    lag_seconds: float | None = None
    reported_at: float | None = None  # time.time() of the report

    def as_json(self) -> dict[str, object]:
        age = None if self.reported_at is None else round(time.time() - self.reported_at, 3)
        return {"state": self.state, "lag_seconds": self.lag_seconds, "report_age_s": age}
