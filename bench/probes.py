#!/usr/bin/env python3
"""Health-probe cost (issue 13): CPU per probe over a kept-alive connection, many backends at once.

A later issue puts a thousand workspaces (two thousand backends) behind one proxy, each probed
every interval. This measures, in this process, the CPU that one probe costs with the data plane's
checks (``proxy.health.HealthChecker``, one per workspace of two backends: callbacks and timers,
llhttp over each backend's kept-alive probe pool) and, as the peer in the same run, with what the
proxy probed with before (a task per backend and one aiohttp ClientSession each). Every backend
points at one local nginx answering ``/bN/healthz``; probes are spread over the interval by each
backend's phase, and the CPU of this process (user + system, ``resource.getrusage``) over the
measured rounds is divided by the probes answered.

Usage: ``.venv/bin/python bench/probes.py [--backends 1000] [--interval 1.0] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peers.upstreams import make_docroot, start_nginx_origin

from proxy.backends import Backend
from proxy.config import HealthConfig
from proxy.failover import CheckResult, Role
from proxy.health import HealthChecker, ProbeSchedule, phase
from proxy.server import install_event_loop_policy
from proxy.tasks import TaskSet


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _spread(
    backends: list[Backend], interval: float, rounds: int, one: Callable[[Backend], Awaitable[bool]]
) -> tuple[int, int, float]:
    """The old shape: a task per backend probing at its phase, then every interval."""
    ok = failed = 0

    async def run(backend: Backend) -> None:
        nonlocal ok, failed
        await asyncio.sleep(phase(backend, interval))
        for _ in range(rounds):
            started = time.monotonic()
            if await one(backend):
                ok += 1
            else:
                failed += 1
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    cpu = _cpu()
    await asyncio.gather(*(run(b) for b in backends))
    return ok, failed, _cpu() - cpu


async def _checkers(urls: list[URL], interval: float, rounds: int) -> tuple[int, int, float]:
    """The proxy's own HealthChecker, one per workspace (a primary and a standby each)."""
    settings = HealthConfig(interval=interval, timeout=interval)
    results: list[CheckResult] = []
    tasks = TaskSet("bench")
    schedule = ProbeSchedule()  # one per process, as a proxy serving many workspaces has
    checkers = []
    for primary, standby in zip(urls[::2], urls[1::2], strict=True):
        backends: dict[Role, Backend] = {
            "primary": Backend("primary", primary, 3.0),
            "standby": Backend("standby", standby, 3.0),
        }
        checkers.append(
            HealthChecker(backends, settings, results.append, time.monotonic, tasks, schedule)
        )
    for checker in checkers:
        checker.start()
    await asyncio.sleep(interval * 2)  # every pool connected, every phase taken
    done, cpu = len(results), _cpu()
    await asyncio.sleep(interval * rounds)
    cpu, measured = _cpu() - cpu, results[done:]
    for checker in checkers:
        checker.stop()
        for backend in checker.backends.values():
            await backend.close()
    schedule.close()
    await tasks.close()
    ok = sum(1 for r in measured if r.ok)
    return ok, len(measured) - ok, cpu


async def measure(port: int, count: int, interval: float, rounds: int) -> list[dict[str, Any]]:
    # Distinct URLs (a path each) so that every backend has a phase of its own, as real ones do;
    # nginx answers /bN/healthz.
    urls = [URL(f"http://127.0.0.1:{port}/b{i}") for i in range(count)]
    rows: list[dict[str, Any]] = []
    ok, failed, cpu = await _checkers(urls, interval, rounds)
    rows.append({"probe": "dumont HealthChecker", "ok": ok, "failed": failed, "cpu": cpu})

    sessions = {url: aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) for url in urls}
    timeout = aiohttp.ClientTimeout(total=interval)

    async def aiohttp_probe(backend: Backend) -> bool:
        try:
            async with sessions[backend.url].get(backend.target("/healthz"), timeout=timeout) as r:
                await r.read()
                return 200 <= r.status < 300
        except (aiohttp.ClientError, TimeoutError):
            return False

    try:
        backends = [Backend("primary", url, 3.0) for url in urls]
        await _spread(backends, interval, 1, aiohttp_probe)  # every session connected
        ok, failed, cpu = await _spread(backends, interval, rounds, aiohttp_probe)
        rows.append({"probe": "aiohttp ClientSession per backend (before)", "ok": ok,
                     "failed": failed, "cpu": cpu})  # fmt: skip
    finally:
        for session in sessions.values():
            await session.close()
    return rows


NGINX_HEALTHZ = """
    location ~ ^/b[0-9]+/healthz$ { return 200 "ok"; }
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.backends + 256)), hard)
    )
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dumont-probes-") as tmp:
        work = Path(tmp)
        origin, port = start_nginx_origin(work, make_docroot(work, 1), extra=NGINX_HEALTHZ)
        try:
            install_event_loop_policy()
            rows = asyncio.run(measure(port, args.backends, args.interval, args.rounds))
        finally:
            origin.stop()
    print(f"{args.backends} backends, every {args.interval:g} s, {args.rounds} rounds each")
    print("| probe | answered | failed | CPU us per probe |")
    print("|---|--:|--:|--:|")
    for row in rows:
        per = row["cpu"] / max(1, row["ok"] + row["failed"]) * 1e6
        print(f"| {row['probe']} | {row['ok']:,} | {row['failed']:,} | {per:,.1f} |")
    print(f"load average (1, 5, 15 min) at start {load_before}, at end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
