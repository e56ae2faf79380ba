"""Failover with real backend processes: killed loud (SIGKILL) or frozen silent (SIGSTOP).

A client polls through the real CLI proxy every 10 ms over keep-alive, as a browser's requests
would arrive; the bounds asserted are generous (switch times are measured in bench/failover.py).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.support.processes import Proc, start_proxy


@dataclass
class PollLog:
    answers: list[tuple[float, str]] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)

    def first_from(self, backend: str, after: float) -> float | None:
        return next((t for t, b in self.answers if b == backend and t >= after), None)


async def poll(url: str, log: PollLog, stop: asyncio.Event) -> None:
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            try:
                async with session.get(url) as r:
                    if r.status == 200:
                        log.answers.append((time.monotonic(), (await r.json())["backend"]))
                    else:
                        log.failures.append((time.monotonic(), f"HTTP {r.status}"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.failures.append((time.monotonic(), repr(exc)))
            await asyncio.sleep(0.01)


async def run_fault(
    proxy: Proc, gpu: Proc, sig: signal.Signals, watch: float
) -> tuple[PollLog, float]:
    log, stop = PollLog(), asyncio.Event()
    task = asyncio.get_running_loop().create_task(
        poll(f"http://127.0.0.1:{proxy.port}/work", log, stop)
    )
    await asyncio.sleep(0.5)
    assert log.answers
    assert log.answers[-1][1] == "gpu"
    fault_at = time.monotonic()
    gpu.signal_group(sig)
    await asyncio.sleep(watch)
    stop.set()
    await task
    return log, fault_at


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "watch", "bound"),
    [
        # Loud: connections refused; the first failed request triggers an immediate probe.
        (signal.SIGKILL, 2.0, 1.0),
        # Silent: the machine accepts and never answers; 0.5 s interval, fall 2 (issue 2: 3 s).
        (signal.SIGSTOP, 4.0, 3.0),
    ],
    ids=["loud", "silent"],
)
async def test_death_switches_in_bound_with_no_failed_get_and_no_flap(
    upstream_processes: Callable[[str], Proc], sig: signal.Signals, watch: float, bound: float
) -> None:
    gpu, cpu = upstream_processes("gpu"), upstream_processes("cpu")
    proxy = start_proxy(
        f"http://127.0.0.1:{gpu.port}",
        f"http://127.0.0.1:{cpu.port}",
        *("--health-interval", "0.5", "--fall", "2"),
    )
    try:
        log, fault_at = await run_fault(proxy, gpu, sig, watch=watch)
    finally:
        proxy.stop()
        gpu.signal_group(signal.SIGCONT)
    switched = log.first_from("cpu", fault_at)
    assert switched is not None, "never switched"
    assert switched - fault_at < bound
    # A GET that failed or hung on the dead primary was re-sent to the standby, not failed.
    assert log.failures == []
    # No flap: nothing answered by the dead primary after the first standby answer.
    assert all(b == "cpu" for t, b in log.answers if t >= switched)
