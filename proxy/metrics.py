"""Prometheus metrics for one proxy: its own registry, bounded labels, base units.

Two kinds of series live here:

- state read at scrape time from the source of truth (which backend is up and active, the machine's
  state, open WebSockets, sync lag, tip counts): a custom collector, so a gauge can never drift from
  what the proxy really does, and nothing is paid for it per request;
- counters and histograms fed by events: ``Workspace.observers`` (checks, switches, hooks) and the
  ``TrafficObserver`` calls (one per HTTP request, two per WebSocket).

Labels only take values from small fixed sets: backend (gpu, cpu), role (primary, standby, none),
HTTP method (the nine standard ones, else OTHER), status class (1xx..5xx), switch reason (the
machine's ``Cause`` folded into ``SWITCH_REASONS``), hook name, result. Never a path, a client
address or free text.

Recording a request is one dict lookup, a bisect and five list or dict additions (under 1 us;
docs/OBSERVABILITY.md has the measurement against the proxy's per-request time).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import accumulate
from typing import Literal, assert_never, get_args

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .failover import (
    Cause,
    CheckResult,
    Decision,
    Event,
    FirstRequestServed,
    HookFinished,
    HookName,
    PassiveFailure,
    Role,
    State,
    SwitchFinished,
    SwitchRecord,
    SwitchStarted,
)
from .observe import TipSnapshot
from .sync_report import SYNC_STATES, SyncReport
from .workspace import Workspace

__all__ = [
    "CONTENT_TYPE",
    "SWITCH_REASONS",
    "ProxyMetrics",
    "render_by_workspace",
    "switch_reason",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

BACKEND_OF: dict[Role, str] = {"primary": "gpu", "standby": "cpu"}
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)
STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")

# Why a switch started, as a bounded label: the machine's Cause, folded into the four values that
# dashboards and alerts already use (switch_reason). A failed hook never starts a switch: it
# abandons a failback (dumont_switches_abandoned_total) and shows in dumont_hook_runs_total.
SwitchReason = Literal["health_check", "passive", "admin", "recovery"]
SWITCH_REASONS: tuple[SwitchReason, ...] = ("health_check", "passive", "admin", "recovery")

# A switch counts as served when the new backend answers its first request (the machine's
# FirstRequestServed); an idle browser may not ask for minutes, so after this long the activation
# time stands in (docs/OBSERVABILITY.md).
FIRST_REQUEST_WAIT = 30.0

# Latencies: health checks on loopback take ~1 ms, across a region tens; requests up to minutes
# (a long download is one request).
CHECK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)
SWITCH_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def switch_reason(cause: Cause) -> SwitchReason:
    """The ``reason`` label of a switch the machine started for ``cause``."""
    match cause:
        case Cause.ACTIVE_CHECK:
            return "health_check"
        case Cause.PASSIVE_FAILURE:
            return "passive"
        case Cause.ADMIN | Cause.SWITCHOVER | Cause.PARK | Cause.RESUME:
            return "admin"  # someone decided it; dumont_park_total tells parks apart
        case Cause.FAILBACK | Cause.RECOVERY:
            return "recovery"
        case Cause.HOOK_FAILURE:
            raise ValueError("a failed hook abandons a switch; it never starts one")
        case _:
            assert_never(cause)


def _status_class(status: int) -> str:
    return STATUS_CLASSES[status // 100] if 100 <= status < 600 else "0xx"


class _StateCollector(Collector):
    """Gauges read from the workspace at scrape time."""

    def __init__(
        self,
        workspace: Workspace,
        sync: SyncReport,
        tips: Callable[[], TipSnapshot | None],
        byte_counts: Callable[[], Mapping[tuple[str, str], int]],
    ) -> None:
        self._workspace = workspace
        self._sync = sync
        self._tips = tips
        self._bytes = byte_counts

    def collect(self) -> Iterator[Metric]:
        ws = self._workspace
        machine = ws.machine
        up = GaugeMetricFamily(
            "dumont_backend_up",
            "1 if the backend passes its health checks (0 while down or not yet checked)",
            labels=["backend", "role"],
        )
        active = GaugeMetricFamily(
            "dumont_backend_active",
            "1 for the backend that serves traffic",
            labels=["backend", "role"],
        )
        sockets = GaugeMetricFamily(
            "dumont_websockets_open", "WebSockets relayed right now", labels=["backend"]
        )
        for role, backend in ws.backends.items():
            up.add_metric([backend.name, role], 1.0 if machine.health[role].up else 0.0)
            active.add_metric([backend.name, role], 1.0 if machine.active == role else 0.0)
            sockets.add_metric([backend.name], float(len(backend.websockets)))
        state = GaugeMetricFamily(
            "dumont_state", "1 for the failover machine's current state", labels=["state"]
        )
        for name in State:
            state.add_metric([str(name)], 1.0 if machine.state == name else 0.0)
        yield from (up, active, sockets, state)
        yield GaugeMetricFamily(
            "dumont_failback_available",
            "1 while serving the standby with a healthy primary (a failback is possible)",
            value=1.0 if machine.failback_available else 0.0,
        )
        relayed = CounterMetricFamily(
            "dumont_relayed_bytes",
            "Body and message bytes relayed, by direction (upstream: to the backend)",
            labels=["direction", "protocol"],
        )
        for (direction, protocol), count in self._bytes().items():
            relayed.add_metric([direction, protocol], float(count))
        yield relayed
        yield from self._sync_metrics()
        yield from self._tip_metrics()

    def _sync_metrics(self) -> Iterator[Metric]:
        sync = self._sync
        state = GaugeMetricFamily(
            "dumont_sync_state", "1 for the file sync's last reported state", labels=["state"]
        )
        for name in SYNC_STATES:
            state.add_metric([name], 1.0 if sync.state == name else 0.0)
        yield state
        if sync.lag_seconds is not None:
            yield GaugeMetricFamily(
                "dumont_sync_lag_seconds",
                "Seconds the standby's files were behind the primary's at the last report",
                value=sync.lag_seconds,
            )
        if sync.reported_at is not None:
            yield GaugeMetricFamily(
                "dumont_sync_report_timestamp_seconds",
                "Unix time of the last sync report (PUT /admin/sync)",
                value=sync.reported_at,
            )

    def _tip_metrics(self) -> Iterator[Metric]:
        counts = self._tips()
        if counts is None:
            return
        shown = CounterMetricFamily(
            "dumont_tip_impressions", "Tips shown on the transition page", labels=["variant"]
        )
        clicked = CounterMetricFamily(
            "dumont_tip_clicks", "Clicks on a tip's link", labels=["variant"]
        )
        for variant, numbers in sorted(counts.items()):
            shown.add_metric([variant], float(numbers.impressions))
            clicked.add_metric([variant], float(numbers.clicks))
        yield shown
        yield clicked


class _RequestCollector(Collector):
    """HTTP request counts and durations, kept in plain lists and exposed at scrape time.

    prometheus_client's ``Counter.inc`` and ``Histogram.observe`` take a lock each (about 3 us
    together per request here); the proxy records from its one event-loop thread, so list
    increments do (about 0.6 us). Scrapes run on the same thread and see consistent numbers.
    """

    def __init__(
        self,
        cells: Mapping[tuple[str | None, str, int], tuple[list[int], list[float]]],
        durations: Mapping[str, list[float]],
    ) -> None:
        self._cells = cells
        self._durations = durations

    def collect(self) -> Iterator[Metric]:
        totals: dict[tuple[str, str, str], int] = {}
        for (backend, method, status), (count, _) in self._cells.items():
            key = (backend or "none", method, _status_class(status))
            totals[key] = totals.get(key, 0) + count[0]
        requests = CounterMetricFamily(
            "dumont_http_requests",
            "HTTP requests forwarded (backend none: no backend answered)",
            labels=["backend", "method", "code"],
        )
        for labels, total in sorted(totals.items()):
            requests.add_metric(list(labels), float(total))
        yield requests
        histogram = HistogramMetricFamily(
            "dumont_http_request_duration_seconds",
            "From the request's arrival to its response's end",
            labels=["backend"],
        )
        bounds = [*(str(b) for b in REQUEST_BUCKETS), "+Inf"]  # as prometheus_client writes them
        for backend, cells in sorted(self._durations.items()):
            cumulative = list(accumulate(cells[:-1]))
            histogram.add_metric(
                [backend], list(zip(bounds, cumulative, strict=True)), sum_value=cells[-1]
            )
        yield histogram


class _CheckCollector(Collector):
    """Health checks counted in plain cells, as _RequestCollector counts requests: two a second
    per workspace, where prometheus_client's locked Counter and Histogram took a fifth of an
    idle thousand-workspace proxy's CPU (bench/workspaces.py)."""

    def __init__(
        self, results: Mapping[tuple[Role, bool], list[int]], latencies: Mapping[Role, list[float]]
    ) -> None:
        self._results = results
        self._latencies = latencies

    def collect(self) -> Iterator[Metric]:
        checks = CounterMetricFamily(
            "dumont_health_checks", "Active health checks", labels=["backend", "result"]
        )
        for (role, ok), count in self._results.items():
            checks.add_metric([BACKEND_OF[role], "ok" if ok else "failed"], float(count[0]))
        yield checks
        histogram = HistogramMetricFamily(
            "dumont_health_check_duration_seconds",
            "Latency of passed health checks",
            labels=["backend"],
        )
        bounds = [*(str(b) for b in CHECK_BUCKETS), "+Inf"]
        for role, cells in self._latencies.items():
            cumulative = list(accumulate(cells[:-1]))
            histogram.add_metric(
                [BACKEND_OF[role]], list(zip(bounds, cumulative, strict=True)), sum_value=cells[-1]
            )
        yield histogram


class ProxyMetrics:
    """The TrafficObserver and workspace observer that feed one registry."""

    def __init__(
        self,
        workspace: Workspace,
        sync: SyncReport,
        tips: Callable[[], TipSnapshot | None] = lambda: None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._now = now
        self._bytes: dict[tuple[str, str], int] = {
            (d, p): 0 for d in ("upstream", "downstream") for p in ("http", "websocket")
        }
        self.registry.register(_StateCollector(workspace, sync, tips, self._bytes.copy))
        r = self.registry
        self.switches = Counter(
            "dumont_switches",
            "Completed switches of traffic between backends",
            ["from", "to", "reason"],
            registry=r,
        )
        self.switches_abandoned = Counter(
            "dumont_switches_abandoned",
            "Switches given up (the target went down, or before_failback failed)",
            ["from", "to", "reason"],
            registry=r,
        )
        self.switch_duration = Histogram(
            "dumont_switch_duration_seconds",
            "From the first failed check (or the command) to the first request the new backend"
            " served",
            ["kind"],
            buckets=SWITCH_BUCKETS,
            registry=r,
        )
        # Per (role, passed): [count]; per role: a cell per bucket, +Inf, then the sum.
        self._check_results: dict[tuple[Role, bool], list[int]] = {
            (role, ok): [0] for role in BACKEND_OF for ok in (True, False)
        }
        self._check_latency: dict[Role, list[float]] = {
            role: [0.0] * (len(CHECK_BUCKETS) + 2) for role in BACKEND_OF
        }
        r.register(_CheckCollector(self._check_results, self._check_latency))
        self.passive = Counter(
            "dumont_passive_failures",
            "Real requests that could not reach the backend",
            ["backend"],
            registry=r,
        )
        self.hooks = Counter(
            "dumont_hook_runs", "Hook commands run", ["hook", "result"], registry=r
        )
        self.websockets = Counter(
            "dumont_websockets", "WebSockets opened through the proxy", ["backend"], registry=r
        )
        self._start_at_zero()
        # Per (backend, method, status), bounded by the label sets above: [count] and the
        # backend's duration cells (one per bucket, +Inf, then the sum).
        self._cells: dict[tuple[str | None, str, int], tuple[list[int], list[float]]] = {}
        self._durations: dict[str, list[float]] = {}
        self.registry.register(_RequestCollector(self._cells, self._durations))
        # A completed switch waiting for its new backend's first answer.
        self._serving: SwitchRecord | None = None

    def _start_at_zero(self) -> None:
        """Export the expected series at 0 from the start: increase() and rate() miss the first
        event of a counter that appears at 1."""
        for from_role, to_role in (("primary", "standby"), ("standby", "primary")):
            for reason in SWITCH_REASONS:
                self.switches.labels(from_role, to_role, reason)
        for backend in BACKEND_OF.values():
            self.passive.labels(backend)
            self.websockets.labels(backend)
        for hook in get_args(HookName):
            for result in ("ok", "failed"):
                self.hooks.labels(hook, result)

    def render(self) -> bytes:
        self.flush_switch_timing()
        return generate_latest(self.registry)

    # ------------------------------------------------------------------ TrafficObserver

    def request_done(
        self,
        backend: str | None,
        method: str,
        status: int,
        seconds: float,
        bytes_up: int,
        bytes_down: int,
    ) -> None:
        if method not in METHODS:
            method = "OTHER"
        cells = self._cells.get((backend, method, status))
        if cells is None:
            cells = self._new_cells(backend, method, status)
        cells[0][0] += 1
        durations = cells[1]
        durations[bisect_left(REQUEST_BUCKETS, seconds)] += 1
        durations[-1] += seconds
        counts = self._bytes
        counts["upstream", "http"] += bytes_up
        counts["downstream", "http"] += bytes_down

    def _new_cells(
        self, backend: str | None, method: str, status: int
    ) -> tuple[list[int], list[float]]:
        name = backend or "none"
        if name not in self._durations:
            self._durations[name] = [0.0] * (len(REQUEST_BUCKETS) + 2)
        cells = ([0], self._durations[name])
        self._cells[backend, method, status] = cells
        return cells

    def websocket_opened(self, backend: str) -> None:
        self.websockets.labels(backend).inc()

    def websocket_closed(self, backend: str, bytes_up: int, bytes_down: int) -> None:
        self._bytes["upstream", "websocket"] += bytes_up
        self._bytes["downstream", "websocket"] += bytes_down

    # ------------------------------------------------------------------ workspace observer

    def observe(self, item: Event | Decision) -> None:
        match item:
            case CheckResult(role=role, ok=ok, latency=latency):
                self._check_results[role, ok][0] += 1
                if latency is not None:
                    cells = self._check_latency[role]
                    cells[bisect_left(CHECK_BUCKETS, latency)] += 1
                    cells[-1] += latency
            case PassiveFailure(role=role):
                self.passive.labels(BACKEND_OF[role]).inc()
            case HookFinished(hook=hook, ok=ok):
                self.hooks.labels(hook, "ok" if ok else "failed").inc()
            case SwitchStarted():
                self.flush_switch_timing(force=True)
            case SwitchFinished(switch=record):
                self._switch_finished(record)
            case FirstRequestServed(switch=record) if (
                self._serving is not None and self._serving.id == record.id
            ):
                assert record.served_at is not None  # the machine sets it on this decision
                self._observe_switch(record, record.served_at)

    def _switch_finished(self, record: SwitchRecord) -> None:
        labels = (record.from_role or "none", record.to_role, switch_reason(record.cause))
        if record.outcome == "completed":
            self.switches.labels(*labels).inc()
            self._serving = record
        else:
            self.switches_abandoned.labels(*labels).inc()

    def _observe_switch(self, record: SwitchRecord, at: float) -> None:
        self._serving = None
        self.switch_duration.labels(record.kind).observe(max(0.0, at - record.detected_at))

    def flush_switch_timing(self, force: bool = False) -> None:
        """No request came for a while after a switch: count the switch until activation."""
        if self._serving is None:
            return
        record = self._serving
        finished = record.finished_at if record.finished_at is not None else record.started_at
        if force or self._now() - finished > FIRST_REQUEST_WAIT:
            self._observe_switch(record, finished)


class _ByWorkspace(Collector):
    """Every workspace's registry as one, each sample labelled ``workspace``: a workspace's
    series appear with it and vanish when it is deleted, so the label is bounded by the set."""

    def __init__(self, parts: Iterable[tuple[str, ProxyMetrics]]) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for workspace, metrics in self.parts:
            metrics.flush_switch_timing()
            for family in metrics.registry.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = Metric(family.name, family.documentation, family.type, family.unit)
                    families[family.name] = merged
                for sample in family.samples:
                    labels = {"workspace": workspace, **sample.labels}
                    merged.add_sample(sample.name, labels, sample.value, sample.timestamp)
        yield from families.values()


def render_by_workspace(parts: Iterable[tuple[str, ProxyMetrics]]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ByWorkspace(parts))
    return generate_latest(registry)
