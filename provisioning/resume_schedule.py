"""When a parked GPU comes back by itself (issue 18): ``pair autopark``'s resume schedule.

    [provisioning]                    # provision.toml, or --resume-at (repeatable)
    resume_at = ["mon-fri 08:30", "sat 10:00"]
    timezone = "America/Sao_Paulo"    # the pair's time zone (IANA name); default UTC

An entry is ``DAYS HH:MM`` (or ``HH:MM:SS``): DAYS is one day (``mon``), a range (``mon-fri``;
``fri-mon`` wraps over the weekend) or ``daily``. The times are wall-clock times in the time zone,
so "08:30" stays 08:30 across daylight saving changes. A parked pair is resumed at the first
scheduled time after it was parked; anything else is a one-line UsageError naming the entry.

Pure: times in, times out; the loop that sleeps lives in cli_park.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from provisioning.errors import UsageError

__all__ = ["ResumeSchedule", "ResumeWindow"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
_ENTRY = re.compile(
    r"^(?P<days>[a-z]+(?:-[a-z]+)?)\s+(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?$"
)


@dataclass(frozen=True)
class ResumeWindow:
    weekdays: frozenset[int]
    at: time

    @classmethod
    def parse(cls, entry: str) -> ResumeWindow:
        match = _ENTRY.match(entry.strip().lower())
        if not match:
            raise UsageError(
                f"bad resume_at entry {entry!r}: expected DAYS HH:MM, like 'mon-fri 08:30'"
            )
        hour, minute, second = int(match["h"]), int(match["m"]), int(match["s"] or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise UsageError(f"bad resume_at entry {entry!r}: no such time of day")
        return cls(_weekdays(match["days"], entry), time(hour, minute, second))


def _weekdays(days: str, entry: str) -> frozenset[int]:
    if days == "daily":
        return frozenset(range(7))
    first, _, last = days.partition("-")
    for day in (first, last or first):
        if day not in DAYS:
            raise UsageError(
                f"bad resume_at entry {entry!r}: {day!r} is not a day (mon..sun or daily)"
            )
    start, end = DAYS.index(first), DAYS.index(last or first)
    return frozenset((start + i) % 7 for i in range((end - start) % 7 + 1))


@dataclass(frozen=True)
class ResumeSchedule:
    windows: tuple[ResumeWindow, ...]
    zone: ZoneInfo

    @classmethod
    def parse(cls, entries: Iterable[str], timezone: str = "UTC") -> ResumeSchedule | None:
        """None for no entries: the pair stays parked until someone resumes it."""
        windows = tuple(ResumeWindow.parse(e) for e in entries if e.strip())
        if not windows:
            return None
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise UsageError(
                f"bad timezone {timezone!r}: expected an IANA name like Europe/Lisbon or UTC"
            ) from exc
        return cls(windows, zone)

    def next_after(self, moment: datetime) -> datetime:
        """The first scheduled time strictly after ``moment`` (aware), in UTC."""
        local = moment.astimezone(self.zone)
        candidates = []
        for offset in range(8):  # every weekday once, plus today's times already gone
            day = local.date() + timedelta(days=offset)
            for window in self.windows:
                if day.weekday() in window.weekdays:
                    at = datetime.combine(day, window.at, tzinfo=self.zone)
                    if at > local:
                        candidates.append(at)
        return min(candidates).astimezone(UTC)

    def due(self, parked_at: datetime, now: datetime) -> bool:
        """A scheduled time has come since the pair was parked."""
        return self.next_after(parked_at) <= now

    def describe(self, moment: datetime) -> str:
        """``moment`` as the user reads the schedule: "mon 08:30 America/Sao_Paulo"."""
        local = moment.astimezone(self.zone)
        return f"{DAYS[local.weekday()]} {local:%H:%M:%S} {self.zone.key}"
