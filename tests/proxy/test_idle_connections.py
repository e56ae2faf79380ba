"""10,000 idle keep-alive client connections held by the real proxy while wrk runs (issue 13).

The proxy CLI in its own process group in front of two upstream processes. The test opens 10,000
connections from 127.0.0.x (bench/peers/idle.py: each gets one answer, then stays idle), runs wrk
for a few seconds while it holds them, and asserts what a user would see: no connection refused,
reset or closed, no failed request, and the proxy's process group under 250 MB of RSS while
holding them. Only the connection caps are raised on the command line (the defaults are below
10,000 on purpose); the file-descriptor limit is raised for this process, which the proxy
inherits, never in the product's defaults. No speed is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator

import pytest

from bench.peers.idle import IdleReport, hold_idle, raise_nofile_limit
from bench.peers.procs import group_rss_bytes
from tests.support.processes import Proc, start_proxy

IDLE = 10_000
RSS_LIMIT_MB = 250
WRK_SECONDS = 3
pytestmark = [pytest.mark.slow, pytest.mark.load, pytest.mark.timeout(110)]


@pytest.fixture
def nofile() -> Iterator[int]:
    """This process's soft RLIMIT_NOFILE raised for the test (and the proxy it starts)."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = raise_nofile_limit(IDLE + 2048)
    try:
        if soft < IDLE + 1024:
            pytest.skip(f"RLIMIT_NOFILE's hard limit allows only {soft} file descriptors")
        yield soft
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def _drain(proc: Proc) -> deque[str]:
    """Read the proxy's output on a thread: a full pipe would block its logging, then the proxy."""
    tail: deque[str] = deque(maxlen=40)
    stream = proc.popen.stdout
    assert stream is not None

    def pump() -> None:
        with contextlib.suppress(ValueError, OSError):  # Proc.stop() closes the pipe
            for line in stream:
                tail.append(line.rstrip())

    threading.Thread(target=pump, name="proxy-output", daemon=True).start()
    return tail


def _wait_routing(url: str, timeout: float = 20.0) -> None:
    """The proxy answers /__dumont/healthz before it has a backend: wait for a 200 through it."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
                last = resp.status
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s (last: {last})")


async def _wrk(url: str) -> dict[str, int]:
    """wrk for a few seconds: requests done, socket errors, non-2xx answers."""
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t1", "-c32", f"-d{WRK_SECONDS}s", "--timeout", "10s", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), WRK_SECONDS + 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    done = re.search(r"(\d+) requests in", text)
    assert proc.returncode == 0, f"wrk failed:\n{text}"
    assert done, f"cannot parse wrk's output:\n{text}"
    socket_errors = re.search(r"Socket errors: (.*)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests": int(done[1]),
        "socket_errors": sum(map(int, re.findall(r"\d+", socket_errors[1])))
        if socket_errors
        else 0,
        "non2xx": int(non2xx[1]) if non2xx else 0,
    }


async def test_ten_thousand_idle_connections_held_while_wrk_runs(
    upstream_processes: Callable[[str], Proc], nofile: int
) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (scripts/install-debian-deps.sh)")
    gpu, cpu = upstream_processes("gpu"), upstream_processes("cpu")
    cap = str(IDLE + 1024)
    proxy = start_proxy(
        f"http://127.0.0.1:{gpu.port}",
        f"http://127.0.0.1:{cpu.port}",
        "--limits-max-connections", cap,
        "--limits-max-connections-per-ip", cap,
        "--fall", "2",
        "--health-interval", "0.5",
    )  # fmt: skip
    tail = _drain(proxy)
    url = f"http://127.0.0.1:{proxy.port}/idle"
    try:
        await asyncio.to_thread(_wait_routing, url)
        async with hold_idle(proxy.port, IDLE, path="/idle", open_within=45.0) as held:
            rss_held = group_rss_bytes(proxy.pgid)
            wrk = await _wrk(url)
            rss_held = max(rss_held, group_rss_bytes(proxy.pgid))
            await asyncio.sleep(0.2)  # a close caused by the end of wrk's run reaches us
            report: IdleReport = held.report()
    finally:
        proxy.stop()
    rss_mb = rss_held / (1 << 20)
    measured = (
        f"{report.answered:,} of {IDLE:,} answered in {report.seconds_to_open:.1f} s, "
        f"{report.open_at_end:,} still open after wrk; errors {dict(report.errors)}; "
        f"wrk {wrk}; proxy RSS while holding them {rss_mb:.1f} MB "
        f"(RLIMIT_NOFILE {nofile}); proxy output tail:\n" + "\n".join(tail)
    )
    print(measured)
    assert not report.errors, measured
    assert report.open_at_end == IDLE, measured
    assert wrk["socket_errors"] == 0, measured
    assert wrk["non2xx"] == 0, measured
    assert wrk["requests"] > 0, measured
    assert rss_mb < RSS_LIMIT_MB, measured
