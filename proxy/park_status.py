"""Parking the idle GPU (issue 18), as the proxy sees it: what provisioning reported, the money it
saved, and the control API's switchover and resume commands.

provisioning (``dumont-provision pair park|resume|autopark``) does the work and reports each phase
with ``PUT /admin/park``; the proxy only keeps the last report, adds up the parked time for the
metrics and the savings panel, and runs two configured hooks:

    POST /admin/switchover   runs hooks.switchover (flush, verify and fence the sync) and switches
                             to the standby only when it exits 0; the reason starts "switchover:"
    POST /admin/resume       starts hooks.resume (``pair resume``) in the background: 202 at once
    POST /admin/park/keep    the user's "Keep it": postpones an announced park by park_after
    PUT  /admin/park         provisioning's report: phase, detail, idle time, prices, standby
    GET  /admin/park         the same state the dashboard shows

Phases: active -> idle (announced, ``park_in_s``) -> parking -> parked -> resuming -> active, with
park_failed / resume_failed carrying provisioning's one-line reason.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .errors import BadRequest, Conflict

__all__ = ["PARK_PHASES", "ParkCollector", "ParkStatus", "StandbyState"]

log = logging.getLogger("dumont.park")

ParkPhase = Literal[
    "active", "idle", "parking", "parked", "resuming", "park_failed", "resume_failed"
]
StandbyState = Literal["present", "missing", "restarting"]
PARK_PHASES: tuple[str, ...] = get_args(ParkPhase)
STANDBY_STATES: tuple[str, ...] = get_args(StandbyState)
PARK_OUTCOMES = ("parked", "failed", "refused")
# A resume reports which step it is in; the IDE names the step in the user's language.
RESUME_STEPS = ("renting", "filling", "switching")
# How long the IDE keeps saying "GPU back in 19 s" after a resume: long enough to be read after
# the failback's reload (the reload itself takes seconds on a loaded machine), short enough to
# be gone when the user starts working.
RESUMED_NOTICE_SECONDS = 90.0
# Resume = rent (boot) + fill + switch: tens of seconds to many minutes.
RESUME_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0)


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{key} must be a finite number or null; got {value!r}")
    if value < 0:
        raise BadRequest(f"{key} must be >= 0; got {value!r}")
    return float(value)


@dataclass
class ParkStatus:
    """The last park report plus what the proxy adds up from the sequence of reports."""

    clock: Callable[[], float] = time.time
    phase: ParkPhase = "active"
    detail: str = ""
    idle_seconds: float | None = None
    park_in_seconds: float | None = None
    park_after_seconds: float | None = None
    keep_until: float | None = None  # wall clock: the user said "Keep it"
    gpu_per_hour: float | None = None
    standby: StandbyState = "present"
    reported_at: float | None = None
    parked_since: float | None = None
    parked_seconds: float = 0.0  # closed parked intervals; the open one is added when read
    parks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARK_OUTCOMES, 0))
    resume_seconds: list[float] = field(default_factory=list)
    resume_step: str | None = None  # renting, filling, switching: while resuming
    resumed_at: float | None = None  # wall clock of the last finished resume
    money_saved: float = 0.0  # closed parked intervals x the GPU's price at the time
    # Called after every change (the IDE's event stream wakes up on it).
    listeners: list[Callable[[], None]] = field(default_factory=list)

    def report(self, body: Any) -> None:
        """Apply provisioning's ``PUT /admin/park`` body (validated here: BadRequest if not)."""
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        phase = body.get("phase", self.phase)  # a standby-only report keeps the phase
        if phase not in PARK_PHASES:
            raise BadRequest(f"phase must be one of {', '.join(PARK_PHASES)}; got {phase!r}")
        standby = body.get("standby", self.standby)
        if standby not in STANDBY_STATES:
            raise BadRequest(f"standby must be one of {', '.join(STANDBY_STATES)}")
        detail = body.get("detail", "")
        if not isinstance(detail, str):
            raise BadRequest("detail must be a string")
        numbers = {
            k: _number(body, k)
            for k in ("idle_s", "park_in_s", "park_after_s", "gpu_per_hour", "resume_s")
        }
        outcome = body.get("outcome")
        if outcome is not None and outcome not in PARK_OUTCOMES:
            raise BadRequest(f"outcome must be one of {', '.join(PARK_OUTCOMES)}")
        step = body.get("step")
        if step is not None and step not in RESUME_STEPS:
            raise BadRequest(f"step must be one of {', '.join(RESUME_STEPS)}; got {step!r}")
        now = self.clock()
        before = self.phase
        if standby != self.standby:
            log.log(
                logging.INFO if standby == "present" else logging.WARNING,
                "standby VM %s -> %s",
                self.standby,
                standby,
                extra={"fields": {"event": "standby_changed", "from": self.standby, "to": standby}},
            )
        self._leave_parked(now, cast(ParkPhase, phase))
        if phase == "parked" and self.parked_since is None:
            self.parked_since = now
        self.phase = cast(ParkPhase, phase)
        self.standby = cast(StandbyState, standby)
        self.detail = " ".join(detail.split())[:300]  # one line, whatever was sent
        self.idle_seconds = numbers["idle_s"]
        self.park_in_seconds = numbers["park_in_s"]
        if numbers["park_after_s"] is not None:
            self.park_after_seconds = numbers["park_after_s"]
        if numbers["gpu_per_hour"] is not None:
            self.gpu_per_hour = numbers["gpu_per_hour"]
        if outcome is not None:
            self.parks[outcome] += 1
        if numbers["resume_s"] is not None:
            self.resume_seconds.append(numbers["resume_s"])
            self.resumed_at = now
        elif phase != "active":
            self.resumed_at = None  # a new park cycle: "GPU back in" is old news
        if phase != "resuming":
            self.resume_step = None
        elif step is not None or before != "resuming":
            self.resume_step = step  # a standby-only report keeps the step under way
        if phase == "active" and before != "idle":
            self.keep_until = None  # a new GPU or a finished resume: nothing is postponed
        self.reported_at = now
        self._notify()
        if before != phase:
            calm = phase not in ("park_failed", "resume_failed")
            log.log(
                logging.INFO if calm else logging.WARNING,
                "park %s -> %s%s",
                before,
                phase,
                f": {self.detail}" if self.detail else "",
                extra={"fields": {"event": "park_changed", "from": before, "to": phase}},
            )

    def _leave_parked(self, now: float, phase: ParkPhase) -> None:
        # Still parked while a resume rents and fills: the GPU costs nothing until it serves.
        if self.parked_since is None or phase in ("parked", "resuming", "resume_failed"):
            return
        interval = max(0.0, now - self.parked_since)
        self.parked_seconds += interval
        self.money_saved += interval / 3600 * (self.gpu_per_hour or 0.0)
        self.parked_since = None

    def keep(self) -> float:
        """The user's "Keep it": no park before now + park_after; returns that wall-clock time."""
        if self.phase not in ("idle", "active"):
            raise Conflict(f"nothing to keep: the GPU is {self.phase}")
        self.keep_until = self.clock() + (self.park_after_seconds or 1800.0)
        if self.phase == "idle":
            self.phase, self.park_in_seconds = "active", None
        self._notify()
        return self.keep_until

    def _notify(self) -> None:
        for listener in self.listeners:
            listener()

    def notice(self) -> dict[str, object] | None:
        """What the IDE's watcher shows (proxy.pages), or None when there is nothing to say: the
        idle warning with its countdown, parked, a resume under way (its step), why one failed, or
        for RESUMED_NOTICE_SECONDS after a resume, the time it took (phase "resumed")."""
        resume_s = None
        if self.phase == "active":
            if self.resumed_at is None or not self.resume_seconds:
                return None
            if self.clock() - self.resumed_at >= RESUMED_NOTICE_SECONDS:
                return None
            resume_s = round(self.resume_seconds[-1])
        idle = None if self.idle_seconds is None else round(self.idle_seconds / 60)
        park_in = None if self.park_in_seconds is None else round(self.park_in_seconds / 60)
        return {
            "phase": "resumed" if resume_s is not None else self.phase,
            "detail": self.detail,
            "idle_min": idle,
            "park_in_min": park_in,
            "standby": self.standby,
            "step": self.resume_step,
            "resume_s": resume_s,
        }

    def total_parked_seconds(self) -> float:
        open_interval = 0.0 if self.parked_since is None else self.clock() - self.parked_since
        return self.parked_seconds + max(0.0, open_interval)

    def as_json(self) -> dict[str, object]:
        now = self.clock()
        parked = self.total_parked_seconds()
        open_hours = 0.0 if self.parked_since is None else max(0.0, now - self.parked_since) / 3600
        saved = self.money_saved + open_hours * (self.gpu_per_hour or 0.0)
        return {
            "phase": self.phase,
            "detail": self.detail,
            "idle_s": self.idle_seconds,
            "park_in_s": self.park_in_seconds,
            "park_after_s": self.park_after_seconds,
            "keep_until": self.keep_until,
            "standby": self.standby,
            "gpu_per_hour": self.gpu_per_hour,
            "parked_hours": round(parked / 3600, 4),
            "gpu_cost_saved": None if self.gpu_per_hour is None else round(saved, 4),
            "parks": dict(self.parks),
            "last_resume_s": self.resume_seconds[-1] if self.resume_seconds else None,
            "resume_step": self.resume_step,
            "report_age_s": None if self.reported_at is None else round(now - self.reported_at, 3),
        }


class ParkCollector(Collector):
    """dumont_gpu_parked_seconds_total, dumont_park_total, dumont_resume_seconds and the standby's
    presence, read from the ParkStatus at scrape time."""

    def __init__(self, status: ParkStatus) -> None:
        self._status = status

    def collect(self) -> Iterator[Any]:
        s = self._status
        yield CounterMetricFamily(
            "dumont_gpu_parked_seconds",
            "Seconds the GPU spent parked (destroyed or stopped) while the standby served",
            value=s.total_parked_seconds(),
        )
        parks = CounterMetricFamily(
            "dumont_park",
            "Park attempts by outcome (refused: preconditions not met)",
            labels=["outcome"],
        )
        for outcome in PARK_OUTCOMES:
            parks.add_metric([outcome], float(s.parks[outcome]))
        yield parks
        cumulative = [sum(1 for v in s.resume_seconds if v <= b) for b in RESUME_BUCKETS]
        buckets = [(str(b), float(c)) for b, c in zip(RESUME_BUCKETS, cumulative, strict=True)]
        buckets.append(("+Inf", float(len(s.resume_seconds))))
        histogram = HistogramMetricFamily(
            "dumont_resume_seconds", "From the resume command to the new GPU serving the user"
        )
        histogram.add_metric([], buckets, sum_value=sum(s.resume_seconds))
        yield histogram
        yield GaugeMetricFamily(
            "dumont_gpu_parked", "1 while the GPU is parked", value=1.0 if s.parked_since else 0.0
        )
        standby = GaugeMetricFamily(
            "dumont_standby_presence",
            "1 for the standby VM's last reported state (missing: preempted, being restarted)",
            labels=["state"],
        )
        for state in STANDBY_STATES:
            standby.add_metric([state], 1.0 if s.standby == state else 0.0)
        yield standby
