#!/usr/bin/env python3
"""What recording metrics costs our proxy (issue 4: at most 3 % of its req/s).

Two measurements in one run:

1. micro: the cost of one ``request_done`` call on ``ProxyMetrics`` (with the label mix of a real
   workbench: mostly GET 2xx, some 3xx/4xx, a few methods) next to ``NullTrafficObserver``;
2. macro: two proxies side by side in front of one nginx origin, ``metrics = true`` and
   ``metrics = false``, hit by wrk in alternation (on, off, on, off, ...) so that drift in the
   machine's load hits both; the median req/s of each and their ratio.

Usage: ``.venv/bin/python bench/metrics_overhead.py [--rounds 6] [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peers.procs import stopping
from peers.proxies import Upstreams, start_proxy
from peers.upstreams import SMALL_PATH, make_docroot, start_nginx_origin
from throughput import run_wrk
from yarl import URL

from proxy.config import Config
from proxy.metrics import ProxyMetrics, SyncStatus
from proxy.observe import NullTrafficObserver, TrafficObserver
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
    """Seconds per request_done call."""
    done = observer.request_done
    mix = MIX * (calls // len(MIX))
    start = time.perf_counter()
    for backend, method, status in mix:
        done(backend, method, status, 0.0012, 0, 1024)
    return (time.perf_counter() - start) / len(mix)


async def micro(calls: int) -> tuple[float, float]:
    workspace = Workspace(
        Config(primary=URL("http://127.0.0.1:1"), standby=URL("http://127.0.0.1:2"))
    )
    try:
        metrics = ProxyMetrics(workspace, SyncStatus())
        time_calls(metrics, calls // 10)  # warm the label cache
        return time_calls(metrics, calls), time_calls(NullTrafficObserver(), calls)
    finally:
        await workspace.close()


def macro(rounds: int, seconds: int) -> tuple[list[float], list[float]]:
    on: list[float] = []
    off: list[float] = []
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
                rps = run_wrk(proxies[setting].url(SMALL_PATH), seconds)["req_s"]
                (on if setting == "true" else off).append(rps)
                print(f"  round {i + 1}: metrics={setting:5}  {rps:9.0f} req/s", file=sys.stderr)
    return on, off


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=400_000)
    args = parser.parse_args()
    with_metrics, null = asyncio.run(micro(args.calls))
    print(f"request_done with metrics: {with_metrics * 1e6:.2f} us/call")
    print(f"request_done, null observer: {null * 1e6:.2f} us/call")
    on, off = macro(args.rounds, args.seconds)
    mon, moff = statistics.median(on), statistics.median(off)
    per_request_us = 1e6 / moff
    print(f"wrk {args.rounds} x {args.seconds}s each, 32 connections, alternating:")
    print(f"  metrics on : median {mon:9.0f} req/s  (runs: {', '.join(f'{x:.0f}' for x in on)})")
    print(f"  metrics off: median {moff:9.0f} req/s  (runs: {', '.join(f'{x:.0f}' for x in off)})")
    print(f"  on/off: {mon / moff:.4f} ({(1 - mon / moff) * 100:+.2f} % cost)")
    share = (with_metrics - null) / (per_request_us * 1e-6) * 100
    print(f"  micro cost / per-request time off ({per_request_us:.0f} us): {share:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
