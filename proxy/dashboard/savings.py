"""The savings panel's arithmetic: what the standby costs against the downtime it saved.

The seed's claim was "$3.60/month per GPU": a standby VM at $0.005/hour for a 30-day month
(720 h). Here the same arithmetic runs on configured prices and on what this proxy really saw:

- standby cost so far: hours since the proxy started x ``standby_per_hour``;
- interruptions survived: completed failovers the proxy made on its own (commanded ones, by an
  operator, a switchover or a park, are drills or plans: their cause says so);
- downtime avoided: per interruption, ``outage_minutes`` (what an interruption costs without a
  standby: a new machine, a restore, reopening the IDE) minus the measured switch time;
- value: downtime avoided x ``downtime_per_minute``; net: value - standby cost so far.

Nothing is invented: with a price missing, the numbers that need it are None and the page says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from proxy.config import PricesConfig
from proxy.failover import COMMANDED, Decision, Event, SwitchFinished

__all__ = ["HOURS_PER_MONTH", "SavingsLedger", "savings"]

HOURS_PER_MONTH = 720.0  # 30 days, as in the seed's arithmetic


@dataclass
class SavingsLedger:
    """Counts the interruptions survived since start; a workspace observer."""

    started_at: float = field(default_factory=time.time)
    interruptions: int = 0
    switch_seconds: float = 0.0  # measured, summed over those interruptions

    def observe(self, item: Event | Decision) -> None:
        if isinstance(item, SwitchFinished):
            record = item.switch
            if (
                record.kind == "failover"
                and record.outcome == "completed"
                and record.cause not in COMMANDED
            ):
                self.interruptions += 1
                self.switch_seconds += record.duration or 0.0


def _rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def savings(
    prices: PricesConfig, ledger: SavingsLedger, now: float | None = None
) -> dict[str, object]:
    now = time.time() if now is None else now
    hours = max(0.0, now - ledger.started_at) / 3600
    standby = prices.standby_per_hour
    per_minute = prices.downtime_per_minute
    avoided = max(0.0, ledger.interruptions * prices.outage_minutes - ledger.switch_seconds / 60)
    standby_so_far = None if standby is None else hours * standby
    value = None if per_minute is None else avoided * per_minute
    month = None if standby is None else HOURS_PER_MONTH * standby
    return {
        "configured": standby is not None and per_minute is not None,
        "hours_observed": round(hours, 3),
        "interruptions_survived": ledger.interruptions,
        "switch_minutes": round(ledger.switch_seconds / 60, 3),
        "outage_minutes": prices.outage_minutes,
        "downtime_avoided_minutes": round(avoided, 2),
        "standby_cost_so_far": _rounded(standby_so_far, 4),
        "standby_cost_per_month": _rounded(month),
        "standby_share_of_gpu": None
        if standby is None or not prices.gpu_per_hour
        else round(standby / prices.gpu_per_hour, 4),
        "value_saved": _rounded(value),
        "net": None
        if value is None or standby_so_far is None
        else round(value - standby_so_far, 2),
        "break_even_minutes_per_month": None
        if month is None or not per_minute
        else round(month / per_minute, 2),
    }
