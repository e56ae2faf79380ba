"""Active health checks: GET the health path on each backend, every interval or when asked.

code-server's /healthz answers {"status": "alive"|"expired"}; ``expired`` means idle, not dead, so
any 2xx counts as up. One probe is in flight per backend at a time; ``probe_now`` skips the wait
(after a passive failure, or to confirm a first failed check at once).

A probe is one request over a kept-alive connection of the backend's own probe pool, parsed by
llhttp: no client session, no task per probe (bench/probes.py measures its CPU). After the first
check, each backend's checks keep a phase of their own within the interval, so a thousand
backends are not probed in one burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Callable

import aiohttp

from .backends import Backend
from .config import HealthConfig
from .dataplane.upstream import ConnectFailed, UpstreamFailure, fetch
from .failover import CheckResult, Role
from .tasks import TaskSet

log = logging.getLogger("dumont.health")

__all__ = ["HealthChecker", "probe", "warm_up"]

# Generous: the point is that the backend does its slow first-request work now, not that we wait.
WARMUP_TIMEOUT = 120.0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connect failed: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, ConnectFailed) and exc.timed_out:
        return "timed out"
    if isinstance(exc, UpstreamFailure):
        return exc.detail
    return f"{type(exc).__name__}: {exc}"


def probe_request(backend: Backend, path: str) -> bytes:
    return (
        f"GET {backend.path_prefix}{path} HTTP/1.1\r\nHost: {backend.host_header}\r\n"
        "User-Agent: dumont-health\r\nAccept: */*\r\n\r\n"
    ).encode("latin-1")


async def probe(backend: Backend, settings: HealthConfig, now: Callable[[], float]) -> CheckResult:
    started = time.perf_counter()
    try:
        status, _ = await fetch(
            backend.probe_pool, probe_request(backend, settings.path), settings.timeout
        )
        ok = 200 <= status < 300
        detail = "" if ok else f"HTTP {status}"
    except (UpstreamFailure, TimeoutError, OSError) as exc:
        ok, detail = False, _describe(exc)
    latency = time.perf_counter() - started
    return CheckResult(backend.role, ok, now(), latency if ok else None, detail)


def phase(backend: Backend, interval: float) -> float:
    """A stable offset within the interval for this backend's checks (spreads many backends)."""
    return (zlib.crc32(str(backend.url).encode()) % 1000) / 1000 * interval


async def warm_up(backend: Backend, path: str) -> None:
    """One GET so that a backend's lazy start-up (code-server's VS Code server) happens now.

    Whatever it answers (code-server redirects to its login page) is fine; a failure only means
    the first user pays the start-up after all, so it is logged, never raised.
    """
    started = time.perf_counter()
    # A session of its own, closed here even when the task is cancelled at shutdown: the request
    # may take seconds (that is the point), must not hold one of the health checks' two pooled
    # connections meanwhile, and must not be left behind when the backend's sessions are replaced.
    try:
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
            session.get(
                backend.target(path),
                timeout=aiohttp.ClientTimeout(total=WARMUP_TIMEOUT),
                allow_redirects=False,
            ) as response,
        ):
            await response.read()
            outcome = f"HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        outcome = _describe(exc)
    log.info(
        "warmed up %s with GET %s: %s in %.2fs",
        backend.role,
        path,
        outcome,
        time.perf_counter() - started,
        extra={"fields": {"event": "warm_up", "role": backend.role, "outcome": outcome}},
    )


class HealthChecker:
    def __init__(
        self,
        backends: dict[Role, Backend],
        settings: HealthConfig,
        report: Callable[[CheckResult], object],
        now: Callable[[], float],
        tasks: TaskSet,
    ) -> None:
        self._backends = backends
        self._settings = settings
        self._report = report
        self._now = now
        self._tasks = tasks
        self._wake: dict[Role, asyncio.Event] = {}

    def start(self) -> None:
        for role in self._backends:
            self._wake[role] = asyncio.Event()
            self._tasks.spawn(self._run(role), name=f"health-{role}")

    def probe_now(self, role: Role) -> None:
        if role in self._wake:
            self._wake[role].set()

    async def _run(self, role: Role) -> None:
        wake = self._wake[role]
        interval = self._settings.interval
        self._report(await probe(self._backends[role], self._settings, self._now))
        # The first check is at once (who serves is decided on it); later ones keep a phase.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), phase(self._backends[role], interval))
        while True:
            wake.clear()
            started = time.monotonic()
            self._report(await probe(self._backends[role], self._settings, self._now))
            remaining = interval - (time.monotonic() - started)
            if remaining > 0 and not wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), remaining)
