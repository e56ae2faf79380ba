"""Health checks on a loop that ran late (a busy proxy: a thousand workspaces starting, a CPU
shared with others): the checks keep their own phases instead of bunching, and an answer that
arrived while the loop was stalled counts, though its deadline passed meanwhile.

The backend is a thread (http.server), so it answers while the test stalls the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import uvloop
from yarl import URL

from proxy.backends import Backend
from proxy.config import HealthConfig
from proxy.failover import CheckResult, Role
from proxy.health import BATCH_SLOT, HealthChecker, ProbeSchedule, phase
from proxy.tasks import TaskSet


class _Healthz(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def threaded_backend() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="healthz", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def _checkers(
    port: int, count: int, settings: HealthConfig
) -> tuple[list[HealthChecker], dict[str, list[CheckResult]], ProbeSchedule, TaskSet]:
    schedule = ProbeSchedule()
    tasks = TaskSet("test-schedule")
    loop = asyncio.get_running_loop()
    results: dict[str, list[CheckResult]] = {}
    checkers = []
    for index in range(count):
        # Distinct URLs (a path each): distinct phases, as distinct backends have.
        backends: dict[Role, Backend] = {
            "primary": Backend("primary", URL(f"http://127.0.0.1:{port}/p{index}"), 1.0),
            "standby": Backend("standby", URL(f"http://localhost:{port}/s{index}"), 1.0),
        }
        for backend in backends.values():
            results[str(backend.url)] = []

        def report(result: CheckResult, found: dict[Role, Backend] = backends) -> None:
            results[str(found[result.role].url)].append(result)

        checker = HealthChecker(backends, settings, report, loop.time, tasks, schedule)
        checkers.append(checker)
    return checkers, results, schedule, tasks


async def test_after_a_stall_each_backend_is_checked_at_its_own_phase(
    threaded_backend: int,
) -> None:
    interval = 0.5
    settings = HealthConfig(interval=interval, timeout=interval, fall=2, rise=2, path="/healthz")
    checkers, results, schedule, tasks = await _checkers(threaded_backend, 20, settings)
    try:
        for checker in checkers:
            checker.start()
        await asyncio.sleep(0.05)
        time.sleep(interval * 2.5)  # noqa: ASYNC251 - the point: the loop stalls, every check comes due
        stalled = asyncio.get_running_loop().time()
        await asyncio.sleep(interval * 3)
        late = []
        for checker in checkers:
            for backend in checker.backends.values():
                offset = phase(backend, interval)
                # The checks after the stall had settled (those caught in it may time out: their
                # connections could not even be opened).
                settled = [r for r in results[str(backend.url)] if r.at > stalled + interval * 1.5]
                for result in settled:
                    assert result.ok, result
                    assert result.latency is not None
                    drift = (result.at - result.latency - offset) % interval
                    late.append(min(drift, interval - drift))
        assert len(late) >= 40
        # Each check starts within a slot or two of its own phase (plus the loop's own lateness),
        # not bunched where the stall ended.
        assert max(late) < 4 * BATCH_SLOT + 0.05, sorted(late)[-5:]
    finally:
        for checker in checkers:
            checker.stop()
        schedule.close()
        await tasks.close()
        for checker in checkers:
            for backend in checker.backends.values():
                await backend.close()


def test_an_answer_that_came_while_the_loop_stalled_is_not_a_timeout(
    threaded_backend: int,
) -> None:
    # On uvloop, as the proxy runs: its libuv reads what arrived before it runs the timers that
    # came due meanwhile, and the probe's deadline is such a timer. A loop that judged the
    # deadline first would fail every backend of a proxy that stalled for longer than a timeout.
    uvloop.run(_answer_during_a_stall(threaded_backend))


async def _answer_during_a_stall(threaded_backend: int) -> None:
    settings = HealthConfig(interval=5.0, timeout=0.1, fall=2, rise=2, path="/healthz")
    checkers, results, schedule, tasks = await _checkers(threaded_backend, 1, settings)
    (checker,) = checkers
    primary = results[str(checker.backends["primary"].url)]
    loop = asyncio.get_running_loop()
    try:
        checker.start()
        while not primary:
            await asyncio.sleep(0.01)
        checker.probe_now("primary")  # the probe goes out on the kept-alive connection...
        loop.call_soon(time.sleep, 0.4)  # ...then the loop stalls past its 0.1 s deadline
        while len(primary) < 2:
            await asyncio.sleep(0.01)
        assert primary[1].ok, primary[1]
    finally:
        checker.stop()
        schedule.close()
        await tasks.close()
        for backend in checker.backends.values():
            await backend.close()
