#!/usr/bin/env python3
"""Failover benchmark (issue 6): how fast each proxy moves from a dead primary to its standby.

Two named backends, "gpu" (primary) and "cpu" (standby), each its own process group, answer ``/``
with their name and ``/healthz`` with 200. In front of them, in the same run: our proxy
(``--health-interval 0.5 --fall 2 --rise 2``), HAProxy with its default check timing and tuned
(0.5 s, fall 2), Caddy (active checks every 0.5 s, passive on) and nginx (passive only).

A client polls ``/`` every 10 ms, one request at a time over keep-alive, 30 s timeout per request.
After a warm-up the primary dies, loud (SIGKILL of its group: connections refused) or silent
(SIGSTOP of its group: the kernel still accepts, nothing answers); fresh backends per scenario.
Reported per proxy and scenario (median over ``--runs``):

- switch s: seconds from the fault to the first answer from the standby ("never" within the cap);
- failed: requests after the fault that got no 200 (errors, timeouts, one cut at the cap);
- longest s: the longest single request after the fault;
- flaps: after the first standby answer, how often the answers turned away from the standby.

Usage: ``.venv/bin/python bench/failover.py [--quick] [--runs N] [--only dumont] [--json F]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector
from peers.procs import stopping
from peers.proxies import FAILOVER_PROXIES, Upstreams, render_config, start_proxy
from peers.report import (
    Bar,
    Column,
    Row,
    check_bars,
    load_summary,
    machine_info,
    machine_load,
    median_rows,
    render_bars,
    render_table,
    write_json,
)
from peers.upstreams import start_backends

Death = Literal["loud", "silent"]
DEATHS: tuple[Death, ...] = ("loud", "silent")
SIGNALS = {"loud": signal.SIGKILL, "silent": signal.SIGSTOP}
PRIMARY, STANDBY = "gpu", "cpu"
POLL_INTERVAL = 0.01
REQUEST_TIMEOUT = 30.0
COLUMNS = tuple(
    column
    for death in DEATHS
    for column in (
        Column(f"{death}_switch_s", f"{death} switch s", digits=3),
        Column(f"{death}_failed", f"{death} failed"),
        Column(f"{death}_longest_s", f"{death} longest s", digits=3),
        Column(f"{death}_flaps", f"{death} flaps"),
    )
)
BARS = (
    Bar("loud death: switch under 0.1 s", "loud_switch_s", "<", 0.1),
    Bar("silent death: switch under 1.5 s", "silent_switch_s", "<", 1.5),
    Bar("loud death: no failed request", "loud_failed", "<=", 0.0),
    Bar("silent death: no failed request", "silent_failed", "<=", 0.0),
    Bar("loud death: no flap", "loud_flaps", "<=", 0.0),
    Bar("silent death: no flap", "silent_flaps", "<=", 0.0),
)


@dataclass(frozen=True)
class Answer:
    """One polled request: monotonic start and end, and the backend's name or what went wrong."""

    start: float
    end: float
    outcome: str


async def _poll(url: str, answers: list[Answer], stop: asyncio.Event) -> None:
    """GET ``url`` one request at a time, every 10 ms, over one keep-alive connection."""
    timeout = ClientTimeout(total=REQUEST_TIMEOUT)
    async with ClientSession(connector=TCPConnector(limit=1), timeout=timeout) as session:
        while not stop.is_set():
            start = time.monotonic()
            try:
                async with session.get(url) as resp:
                    body = (await resp.text()).strip()
                outcome = body if resp.status == 200 else f"HTTP {resp.status}"
            except TimeoutError:
                outcome = "timeout"
            except ClientError as exc:
                outcome = type(exc).__name__
            except asyncio.CancelledError:
                answers.append(Answer(start, time.monotonic(), "cut at the cap"))
                raise
            answers.append(Answer(start, time.monotonic(), outcome))
            await asyncio.sleep(max(0.0, start + POLL_INTERVAL - time.monotonic()))


async def _scenario(url: str, fault: Callable[[], None], args: argparse.Namespace) -> Row:
    answers: list[Answer] = []
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        poller = tasks.create_task(_poll(url, answers, stop), name="poller")
        # A random phase against the health checks: a real machine dies at any moment, not just
        # after a check (the proxy starts its checks when it starts, a fixed time before).
        await asyncio.sleep(args.warmup + random.uniform(0.0, args.jitter))
        fault_at = time.monotonic()
        fault()
        deadline = fault_at + args.cap
        while time.monotonic() < deadline and not poller.done():
            switched = [a.end for a in answers if a.end > fault_at and a.outcome == STANDBY]
            if switched and time.monotonic() > switched[0] + args.observe:
                break
            await asyncio.sleep(0.05)
        stop.set()
        # Done watching: let the request in flight finish; at the cap it is cut (and counted).
        grace = 2.0 if time.monotonic() < deadline else 0.0
        await asyncio.wait([poller], timeout=grace)
        poller.cancel()
    return measure(answers, fault_at)


def measure(answers: list[Answer], fault_at: float) -> Row:
    before = [a for a in answers if a.end <= fault_at]
    after = [a for a in answers if a.end > fault_at]
    first = next((a for a in after if a.outcome == STANDBY), None)
    flaps = 0
    if first is not None:
        tail = after[after.index(first) :]
        flaps = sum(
            1 for prev, cur in itertools.pairwise(tail)
            if prev.outcome == STANDBY and cur.outcome != STANDBY
        )  # fmt: skip
    failures = [a.outcome for a in after if a.outcome not in (PRIMARY, STANDBY)]
    return {
        "switch_s": math.inf if first is None else first.end - fault_at,
        "failed": float(len(failures)),
        "longest_s": max((a.end - a.start for a in after), default=0.0),
        "flaps": float(flaps),
        "requests": float(len(after)),
        "warmup_not_primary": float(sum(1 for a in before if a.outcome != PRIMARY)),
        "failures": ", ".join(sorted(set(failures))) or None,
    }


def run_scenario(name: str, death: Death, workdir: Path, args: argparse.Namespace) -> Row:
    """Fresh backends and a fresh proxy; kill or freeze the primary; measure the switch."""
    with stopping([]) as groups:
        (gpu, gpu_port), (cpu, cpu_port) = start_backends(workdir, [PRIMARY, STANDBY])
        groups += [gpu, cpu]
        proxy = start_proxy(name, "failover", Upstreams(gpu_port, cpu_port), workdir)
        groups.append(proxy.group)
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        row = asyncio.run(_scenario(proxy.url("/"), lambda: gpu.signal(SIGNALS[death]), args))
        proxy.group.check_alive()
        row["starts"] = float(proxy.starts)
    return row


def show_configs(workdir: Path) -> None:
    up = Upstreams(primary=8001, standby=8002)
    for name in FAILOVER_PROXIES:
        if name != "dumont":
            print(f"## {name} (failover mode, gpu 127.0.0.1:8001, cpu 127.0.0.1:8002)\n")
            print(render_config(name, "failover", 8080, up, workdir))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short warm-up, cap and watch")
    parser.add_argument("--runs", type=int, help="runs to take the median of (5; quick: 1)")
    parser.add_argument("--only", help="comma-separated proxies")
    parser.add_argument("--json", type=Path, help="write every run and the medians here")
    parser.add_argument("--show-configs", action="store_true", help="print peer configs, exit")
    args = parser.parse_args()
    args.warmup = 1.0 if args.quick else 3.0
    args.jitter = 0.5 if args.quick else 2.0  # HAProxy's default check interval
    args.cap = 5.0 if args.quick else 25.0
    args.observe = 0.5 if args.quick else 3.0
    args.runs = args.runs or (1 if args.quick else 5)
    args.sample = 0.2 if args.quick else 1.0  # seconds to watch what else runs
    names = args.only.split(",") if args.only else list(FAILOVER_PROXIES)
    unknown = set(names) - set(FAILOVER_PROXIES)
    if unknown:
        parser.error(f"unknown proxies {sorted(unknown)}; known: {', '.join(FAILOVER_PROXIES)}")
    args.names = [n for n in FAILOVER_PROXIES if n in names]
    return args


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="dumont-failover-") as tmp:
        workdir = Path(tmp)
        if args.show_configs:
            show_configs(workdir)
            return 0
        machine = machine_info(args.sample)
        print(
            f"machine: {machine['cpus']} x {machine['cpu']}, load {machine['at_start']['loadavg']}"
        )
        runs: list[dict[str, Row]] = []
        for run in range(args.runs):
            order = args.names[run % len(args.names) :] + args.names[: run % len(args.names)]
            rows: dict[str, Row] = {}
            for name in order:
                rows[name] = {}
                for death in DEATHS:
                    print(f"run {run + 1}/{args.runs}: {name} {death}", file=sys.stderr, flush=True)
                    try:
                        result = run_scenario(name, death, workdir, args)
                    except Exception as exc:  # one broken proxy must not cost the others
                        print(f"  {name} {death} failed: {exc!r}", file=sys.stderr)
                        result = {"error": repr(exc)}
                    rows[name].update({f"{death}_{k}": v for k, v in result.items()})
            runs.append({n: rows[n] for n in args.names})
    medians = median_rows(runs)
    print(f"\nMedians of {args.runs} run(s); cap {args.cap:g} s per scenario:\n")
    print(render_table(medians, COLUMNS, peers=()))
    if args.runs > 1:
        print(f"\nWorst of {args.runs} runs (per cell):\n")
        print(render_table(median_rows(runs, combine=max), COLUMNS, peers=()))
    bars: list[dict[str, Any]] = []
    if "dumont" in medians:
        bars = check_bars(medians["dumont"], medians, BARS)
        print("\nBars for our proxy:\n" + render_bars(bars))
    machine["at_end"] = machine_load(args.sample)
    print("\n" + load_summary(machine))
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        payload = {"benchmark": "failover", "machine": machine, "settings": settings}
        write_json(args.json, {**payload, "runs": runs, "median": medians, "bars": bars})
    errors = [v for run in runs for row in run.values() for k, v in row.items() if "error" in k]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
