"""The health checks' own behaviour, on real sockets: timing, timeouts, probe_now, stop.

proxy.health drives each backend's checks with loop timers and the probe pool's connection as the
response sink (no task per check); these pin what the failover machine relies on.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from proxy.backends import Backend
from proxy.config import HealthConfig
from proxy.failover import CheckResult, Role
from proxy.health import BATCH_SLOT, HealthChecker, ProbeSchedule
from proxy.tasks import TaskSet


async def _silent_server() -> tuple[asyncio.Server, int]:
    """Accepts and reads, never answers: a frozen machine's kernel."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


Checks = Callable[[URL, URL, HealthConfig], Awaitable[tuple[HealthChecker, list[CheckResult]]]]


@pytest.fixture
async def checks() -> AsyncIterator[Checks]:
    started: list[tuple[HealthChecker, TaskSet]] = []

    async def start(
        primary: URL, standby: URL, settings: HealthConfig
    ) -> tuple[HealthChecker, list[CheckResult]]:
        backends: dict[Role, Backend] = {
            "primary": Backend("primary", primary, 1.0),
            "standby": Backend("standby", standby, 1.0),
        }
        results: list[CheckResult] = []
        tasks = TaskSet("test-health")
        loop = asyncio.get_running_loop()
        checker = HealthChecker(backends, settings, results.append, loop.time, tasks)
        checker.start()
        started.append((checker, tasks))
        return checker, results

    yield start
    for checker, tasks in started:
        checker.stop()
        for backend in checker.backends.values():
            await backend.close()
        await tasks.close()


@pytest.fixture
async def healthy(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> URL:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    server = await aiohttp_server(app)
    return URL(f"http://127.0.0.1:{server.port}")


async def _results_for(results: list[CheckResult], role: Role, count: int, within: float) -> None:
    for _ in range(int(within / 0.01)):
        if sum(1 for r in results if r.role == role) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{role}: fewer than {count} checks within {within}s: {results}")


async def test_first_check_at_once_then_every_interval_on_one_connection(
    healthy: URL, checks: Checks
) -> None:
    settings = HealthConfig(interval=0.2, timeout=0.5, fall=2, rise=2)
    other = URL(str(healthy).replace("127.0.0.1", "localhost"))
    checker, results = await checks(healthy, other, settings)
    await _results_for(results, "primary", 1, 1.0)
    first = next(r for r in results if r.role == "primary")
    assert first.ok
    assert first.detail == ""
    await _results_for(results, "primary", 4, 3.0)
    times = [r.at for r in results if r.role == "primary"]
    # After the first (then a phase), one check an interval, rounded up to the batch grid;
    # generous for CI.
    gaps = [b - a for a, b in itertools.pairwise(times[1:])]
    assert all(0.15 < gap < 0.2 + BATCH_SLOT + 0.3 for gap in gaps), gaps
    # Kept alive: every check reused the probe pool's one connection.
    assert checker.backends["primary"].probe_pool.idle_count == 1


async def test_a_backend_that_never_answers_times_out(healthy: URL, checks: Checks) -> None:
    server, port = await _silent_server()
    try:
        settings = HealthConfig(interval=0.2, timeout=0.3, fall=2, rise=2)
        _, results = await checks(URL(f"http://127.0.0.1:{port}"), healthy, settings)
        await _results_for(results, "primary", 2, 3.0)
        failed = [r for r in results if r.role == "primary"]
        assert not any(r.ok for r in failed)
        assert {r.detail for r in failed} == {"timed out"}
    finally:
        server.close()


async def test_refused_connection_is_reported_as_such(healthy: URL, checks: Checks) -> None:
    server, port = await _silent_server()
    server.close()
    await server.wait_closed()  # nothing listens there now
    settings = HealthConfig(interval=0.2, timeout=0.3, fall=2, rise=2)
    _, results = await checks(URL(f"http://127.0.0.1:{port}"), healthy, settings)
    await _results_for(results, "primary", 1, 2.0)
    result = next(r for r in results if r.role == "primary")
    assert not result.ok
    assert result.detail.startswith("connect failed")


async def test_probe_now_checks_at_once_and_stop_ends_the_checks(
    healthy: URL, checks: Checks
) -> None:
    settings = HealthConfig(interval=5.0, timeout=0.5, fall=2, rise=2)
    other = URL(str(healthy).replace("127.0.0.1", "localhost"))
    checker, results = await checks(healthy, other, settings)
    await _results_for(results, "primary", 1, 1.0)
    checker.probe_now("primary")  # well before the 5 s interval
    await _results_for(results, "primary", 2, 1.0)
    checker.stop()
    count = len(results)
    checker.probe_now("primary")  # after stop: a no-op, not a crash or a late check
    await asyncio.sleep(0.3)
    assert len(results) == count


async def test_checkers_sharing_one_schedule_each_keep_their_rhythm(healthy: URL) -> None:
    """A thousand workspaces share one ProbeSchedule (one loop timer): a stopped checker leaves
    the others going, and a report that raises costs that check alone."""
    settings = HealthConfig(interval=0.2, timeout=0.5, fall=2, rise=2)
    schedule = ProbeSchedule()
    tasks = TaskSet("test-schedule")
    loop = asyncio.get_running_loop()
    results: list[list[CheckResult]] = [[], [], []]

    def failing_report(result: CheckResult) -> None:
        results[2].append(result)
        raise RuntimeError("an observer broke")

    reports = [results[0].append, results[1].append, failing_report]
    checkers = []
    for i, report in enumerate(reports):
        backends: dict[Role, Backend] = {
            "primary": Backend("primary", healthy / f"w{i}", 1.0),
            "standby": Backend("standby", healthy / f"s{i}", 1.0),
        }
        checker = HealthChecker(backends, settings, report, loop.time, tasks, schedule)
        checker.start()
        checkers.append(checker)
    try:
        await _results_for(results[0], "primary", 3, 3.0)
        checkers[1].stop()
        stopped_at = len(results[1])
        counted = [len(r) for r in results]
        await _results_for(results[0], "primary", 6, 3.0)
        assert len(results[1]) == stopped_at
        assert len(results[2]) > counted[2]  # its report raised every time; it still checks
    finally:
        for checker in checkers:
            checker.stop()
            for backend in checker.backends.values():
                await backend.close()
        schedule.close()
        await tasks.close()


async def test_probe_now_from_inside_a_report_starts_one_probe(healthy: URL) -> None:
    """The machine asks for a confirming probe while a result is being reported: one probe
    follows, not two in flight at once."""
    # An hour: the next scheduled check (at a phase of the interval) never falls in the window.
    settings = HealthConfig(interval=3600.0, timeout=0.5, fall=2, rise=2)
    tasks = TaskSet("test-probe-now")
    loop = asyncio.get_running_loop()
    results: list[CheckResult] = []
    backends: dict[Role, Backend] = {
        "primary": Backend("primary", healthy, 1.0),
        "standby": Backend("standby", URL(str(healthy).replace("127.0.0.1", "localhost")), 1.0),
    }

    def report(result: CheckResult) -> None:
        results.append(result)
        if result.role == "primary" and len([r for r in results if r.role == "primary"]) == 1:
            checker.probe_now("primary")

    checker = HealthChecker(backends, settings, report, loop.time, tasks)
    checker.start()
    try:
        await _results_for(results, "primary", 2, 2.0)
        await asyncio.sleep(0.5)  # a second probe in flight would have answered by now
        assert len([r for r in results if r.role == "primary"]) == 2
    finally:
        checker.stop()
        for backend in backends.values():
            await backend.close()
        await tasks.close()
