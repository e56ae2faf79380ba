#!/usr/bin/env python3
"""What recording metrics costs our proxy (issue 4: at most 3 % of its req/s).

Two measurements in one run:

1. micro: the cost of one ``request_done`` call on ``ProxyMetrics`` (with the label mix of a real
   workbench: mostly GET 2xx, some 3xx/4xx, a few methods) next to ``NullTrafficObserver``;
2. macro: two proxies side by side in front of one nginx origin, ``metrics = true`` and
   ``metrics = false``, hit by wrk in alternation (on, off, on, off, ...) so that drift in the
   machine's load hits both; the median req/s of each, and the proxy process's CPU time per
   request (from /proc: on a busy machine req/s follows the neighbours, CPU time per request
   much less so, and a CPU-bound proxy's ceiling is its inverse).

Usage: ``.venv/bin/python bench/metrics_overhead.py [--rounds 6] [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peers.procs import stopping
from peers.proxies import Upstreams, start_proxy
from peers.upstreams import SMALL_PATH, make_docroot, start_nginx_origin
from yarl import URL

from proxy.config import Config
from proxy.metrics import ProxyMetrics
from proxy.observe import NullTrafficObserver, TrafficObserver
from proxy.sync_report import SyncReport
from proxy.workspace import Workspace

MIX = [
    ("gpu", "GET", 200),
    ("gpu", "GET", 200),
    ("gpu", "GET", 304),
    ("gpu", "POST", 200),
    ("gpu", "GET", 404),
    ("gpu", "GET", 200),
    ("gpu", "HEAD", 200),
    ("cpu", "GET", 200),
]


def time_calls(observer: TrafficObserver, calls: int) -> float:
    """CPU seconds per request_done call (CPU time: on a busy machine, wall time would count the
    moments this process waits for a core)."""
    done = observer.request_done
    mix = MIX * (calls // len(MIX))
    start = time.process_time()
    for backend, method, status in mix:
        done(backend, method, status, 0.0012, 0, 1024)
    return (time.process_time() - start) / len(mix)


async def micro(calls: int) -> tuple[float, float]:
    workspace = Workspace(
        Config(primary=URL("http://127.0.0.1:1"), standby=URL("http://127.0.0.1:2"))
    )
    try:
        metrics = ProxyMetrics(workspace, SyncReport())
        time_calls(metrics, calls // 10)  # warm the label cache
        return time_calls(metrics, calls), time_calls(NullTrafficObserver(), calls)
    finally:
        await workspace.close()


def run_wrk(url: str, seconds: int) -> tuple[int, float]:
    """Requests done and their elapsed seconds (only the totals: the CPU time needs the count)."""
    argv = ["wrk", "-t2", "-c32", f"-d{seconds}s", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    done = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out.stdout)
    if done is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out.stdout}")
    scale = {"ms": 1e-3, "s": 1.0, "m": 60.0}[done[3]]
    return int(done[1]), float(done[2]) * scale


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Runs = dict[str, list[tuple[float, float]]]  # setting -> [(req/s, CPU us per request)]


def macro(rounds: int, seconds: int) -> Runs:
    runs: Runs = {"true": [], "false": []}
    with tempfile.TemporaryDirectory(prefix="dumont-metrics-") as tmp, stopping([]) as groups:
        workdir = Path(tmp)
        origin_group, origin = start_nginx_origin(workdir, make_docroot(workdir, 1))
        groups.append(origin_group)
        proxies = {}
        for setting in ("true", "false"):
            os.environ["DUMONT_METRICS"] = setting
            proxies[setting] = start_proxy("dumont", "pool", Upstreams(origin, origin + 1), workdir)
            groups.append(proxies[setting].group)
        os.environ.pop("DUMONT_METRICS")
        time.sleep(1.0)
        for proxy in proxies.values():
            run_wrk(proxy.url(SMALL_PATH), 2)  # warm-up
        for i in range(rounds):
            order = ("true", "false") if i % 2 == 0 else ("false", "true")
            for setting in order:
                pid = proxies[setting].group.pgid  # the group's leader is the proxy itself
                cpu_before = cpu_seconds(pid)
                requests, elapsed = run_wrk(proxies[setting].url(SMALL_PATH), seconds)
                rps = requests / elapsed
                cpu_us = (cpu_seconds(pid) - cpu_before) / requests * 1e6
                runs[setting].append((rps, cpu_us))
                print(
                    f"  round {i + 1}: metrics={setting:5}  {rps:9.0f} req/s"
                    f"  {cpu_us:7.1f} us CPU/req",
                    file=sys.stderr,
                )
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=400_000)
    args = parser.parse_args()
    with_metrics, null = asyncio.run(micro(args.calls))
    print(f"request_done with metrics: {with_metrics * 1e6:.2f} us/call")
    print(f"request_done, null observer: {null * 1e6:.2f} us/call")
    runs = macro(args.rounds, args.seconds)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"wrk {args.rounds} x {args.seconds}s each, 32 connections, /1k, alternating:")
    medians = {}
    for setting, label in (("true", "metrics on "), ("false", "metrics off")):
        rps = [r for r, _ in runs[setting]]
        cpu = [c for _, c in runs[setting]]
        medians[setting] = (statistics.median(rps), statistics.median(cpu))
        print(
            f"  {label}: median {medians[setting][0]:8.0f} req/s, "
            f"{medians[setting][1]:6.1f} us CPU per request"
        )
    (rps_on, cpu_on), (rps_off, cpu_off) = medians["true"], medians["false"]
    print(f"  req/s on/off: {rps_on / rps_off:.4f} ({(1 - rps_on / rps_off) * 100:+.2f} % cost)")
    print(
        f"  CPU per request on/off: {cpu_on / cpu_off:.4f} ({(cpu_on / cpu_off - 1) * 100:+.2f} %)"
    )
    share = (with_metrics - null) * 1e6 / cpu_off * 100
    print(f"  micro: request_done's extra cost / CPU per request off: {share:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
