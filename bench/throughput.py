#!/usr/bin/env python3
"""Throughput benchmark (issues 2, 13): our proxy next to nginx, HAProxy and Caddy, in one run.

Upstreams: an nginx origin (``/1k``: 1 KiB, ``/big``: 256 MiB of random bytes) and an aiohttp
WebSocket echo. Every proxy gets its own instance in front of each upstream (our proxy forwards
everything to one primary, so the WebSocket cell uses a second instance whose primary is the echo).
"direct" is the baseline without a proxy. Per proxy and run:

- wrk: ``/1k``, 32 connections, 2 threads -> req/s, p50 and p99 latency;
- a WebSocket client: one connection, small messages sent and awaited one at a time -> p50/p99 RTT;
- curl: one ``/big`` download, body discarded -> MB/s (10^6 bytes per second);
- RSS of the proxy's process group after start (idle) and after wrk and the download;
- idle connections (issue 13; ``--idle-connections N``, 10,000, quick: 1,000, 0: skipped): a
  fresh instance of each proxy, N keep-alive client connections from 127.0.0.x that each get one
  ``/1k`` answer and then stay idle, wrk run while they are held -> errors (wrk's socket errors and
  non-2xx answers, plus held connections refused, reset, closed or answered with a non-200), how
  many were still open at the end, RSS of the proxy's process group while holding them, and req/s.

Each cell is the median over ``--runs`` runs (the idle phase's errors: the worst run; connections
still open: the fewest); a ratio in parentheses compares with the best peer.

Sign-in (issue 17's bar: at most 5 us of CPU per request; ``--only signin`` runs it alone, in about
two minutes): two instances of our proxy in front of the same origin, one with ``auth.mode =
"none"`` and one with ``"oidc"``, and wrk sending both the same browser-like request (a dozen
fields, code-server's cookie) carrying a valid session cookie, sealed with the proxy's own code
and the test key the gated instance reads. No provider runs: a valid session needs none. The two
are measured at the same time (one wrk each), in ``--signin-rounds`` rounds of short runs, with
32 connections and with 1; CPU per request is the instance's CPU time over wrk's requests, and
the bar is the median of the rounds' differences. Every answer must be a 2xx, so a refused
cookie cannot pass for a cheap request.

Usage: ``.venv/bin/python bench/throughput.py [--quick] [--runs N] [--only dumont,signin]
[--json F] [--idle-connections N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import operator
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, WSMsgType
from peers.idle import hold_idle, raise_nofile_limit
from peers.procs import REPO_DIR, ProcessGroup, stopping, wait_http
from peers.proxies import (
    POOL_PROXIES,
    RunningProxy,
    Upstreams,
    dumont_argv,
    render_config,
    start_proxy,
)
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
from peers.upstreams import BIG_PATH, SMALL_PATH, make_docroot, start_nginx_origin, start_ws_echo
from signin import browser_headers, gate_alone

from proxy.auth.seal import Sealer, read_keys
from proxy.auth.sessions import SESSION_COOKIE, SessionBook
from tests.support.ports import free_port

PEERS = ("nginx", "haproxy", "caddy")
COLUMNS = (
    Column("req_s", "req/s", "higher"),
    Column("p50_ms", "p50 ms", "lower", 3),
    Column("p99_ms", "p99 ms", "lower", 3),
    Column("cpu_us_per_req", "CPU us/req", "lower"),
    Column("ws_p50_us", "WS p50 us", "lower"),
    Column("ws_p99_us", "WS p99 us", "lower"),
    Column("ws_added_p50_us", "WS +p50 us", None),
    Column("bulk_mb_s", "bulk MB/s", "higher"),
    Column("rss_idle_mb", "RSS idle MB", "lower", 1),
    Column("rss_after_mb", "RSS after MB", "lower", 1),
)
IDLE_COLUMNS = (
    Column("idle_open_end", "held at end", "higher"),
    Column("idle_errors", "errors", "lower"),
    Column("idle_rss_mb", "RSS held MB", "lower", 1),
    Column("idle_req_s", "req/s held", "higher"),
    Column("idle_open_s", "open s", "lower", 1),
)
# Issue 13's bars; a string reference is a peer measured in the same run, times ``factor``.
BARS = (
    Bar("req/s at least 0.5x HAProxy's", "req_s", ">=", "haproxy", factor=0.5),
    Bar("req/s at least 2.5x Caddy's", "req_s", ">=", "caddy", factor=2.5),
    Bar("p99 at most 2x HAProxy's (ms)", "p99_ms", "<=", "haproxy", factor=2.0),
    Bar("CPU per request at most 30 us", "cpu_us_per_req", "<=", 30.0),
    Bar("WebSocket p50 adds at most 25 us over direct", "ws_added_p50_us", "<=", 25.0),
    Bar("download at least 1.0x nginx's MB/s", "bulk_mb_s", ">=", "nginx", factor=1.0),
    Bar("idle RSS under 60 MB", "rss_idle_mb", "<", 60.0),
)
# Issue 17's bar, and the name ``--only`` knows the sign-in case by.
SIGNIN = "signin"
SIGNIN_BAR = 5.0
# The idle phase sums up each run's worst, not its median: one run with errors is a miss.
WORST_OVER_RUNS = {"idle_errors": max, "idle_open_end": min}


def idle_bars(count: int) -> tuple[Bar, ...]:
    return (
        Bar(f"{count:,} idle connections held while wrk runs: no errors", "idle_errors", "<=", 0.0),
        Bar(f"{count:,} idle connections all still open", "idle_open_end", ">=", float(count)),
        Bar("RSS while holding them under 250 MB", "idle_rss_mb", "<", 250.0),
    )


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def run_wrk(
    url: str,
    seconds: int,
    connections: int = 32,
    threads: int = 2,
    headers: Sequence[tuple[str, str]] = (),
) -> dict[str, float]:
    fields = [arg for name, value in headers for arg in ("-H", f"{name}: {value}")]
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *fields, url]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    pct = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.MULTILINE))
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    total = re.search(r"^\s+(\d+) requests in", out, re.MULTILINE)
    if rps is None or total is None or "50" not in pct or "99" not in pct:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    socket_errors = sum(int(n) for n in re.findall(r"\d+", errors[1])) if errors else 0
    if bad or errors:
        print(
            f"  wrk {url}: {bad[0] if bad else ''} {errors[0] if errors else ''}", file=sys.stderr
        )
    return {
        "req_s": float(rps[1]),
        "p50_ms": _ms(pct["50"]),
        "p99_ms": _ms(pct["99"]),
        "wrk_requests": float(total[1]),
        "wrk_non2xx": float(bad[1]) if bad else 0.0,
        "wrk_socket_errors": float(socket_errors),
    }


async def _ws_rtts(url: str, messages: int, warmup: int) -> list[float]:
    payload = "x" * 64
    rtts: list[float] = []
    async with ClientSession() as session, session.ws_connect(url, compress=0) as ws:
        for i in range(warmup + messages):
            start = time.perf_counter_ns()
            await ws.send_str(payload)
            msg = await ws.receive(timeout=10)
            elapsed = time.perf_counter_ns() - start
            if msg.type is not WSMsgType.TEXT or msg.data != payload:
                raise RuntimeError(f"WebSocket echo through {url} answered {msg.type}")
            if i >= warmup:
                rtts.append(elapsed / 1000)
    return rtts


def run_ws(url: str, messages: int) -> dict[str, float]:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    rtts = asyncio.run(_ws_rtts(url, messages, warmup=max(50, messages // 20)))
    cuts = statistics.quantiles(rtts, n=100, method="inclusive")
    return {"ws_p50_us": statistics.median(rtts), "ws_p99_us": cuts[98]}


def run_bulk(url: str, expected_bytes: int) -> dict[str, float]:
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}"]
    out = subprocess.run(
        [*argv, "--max-time", "120", url], capture_output=True, text=True, check=True
    ).stdout
    code, size, seconds = out.split()
    if code != "200" or int(size) != expected_bytes:
        raise RuntimeError(f"bulk download from {url}: HTTP {code}, {size} bytes")
    return {"bulk_mb_s": int(size) / float(seconds) / 1e6}


def _mb(n: int) -> float:
    return n / (1 << 20)


def bench_proxy(name: str, origin: int, echo: int, workdir: Path, args: argparse.Namespace) -> Row:
    """All cells of one proxy; ``direct`` means no proxy in between."""
    big = args.big_mib << 20
    row: Row = {}
    if name == "direct":
        http_base, ws_base = f"http://127.0.0.1:{origin}", f"ws://127.0.0.1:{echo}"
        proxy: RunningProxy | None = None
    else:
        proxy = start_proxy(name, "pool", Upstreams(primary=origin, standby=echo), workdir)
        http_base = proxy.url("")
        ws_base = ""
    try:
        if proxy is not None:
            time.sleep(args.settle)
            row["rss_idle_mb"] = _mb(proxy.group.rss_bytes())
        if args.warmup:
            run_wrk(http_base + SMALL_PATH, args.warmup)
        cpu_before = proxy.group.cpu_seconds() if proxy is not None else 0.0
        wrk = run_wrk(http_base + SMALL_PATH, args.duration)
        row.update(wrk)
        if proxy is not None:
            # CPU per request hardly depends on what else runs, unlike req/s on a shared machine.
            cpu = proxy.group.cpu_seconds() - cpu_before
            row["cpu_us_per_req"] = 1e6 * cpu / wrk["wrk_requests"]
        row.update(run_bulk(http_base + BIG_PATH, big))
        if proxy is not None:
            row["rss_after_mb"] = _mb(proxy.group.rss_bytes())
            row["starts"] = float(proxy.starts)
    finally:
        if proxy is not None:
            proxy.group.stop()
    ws_proxy = None
    if name != "direct":
        ws_proxy = start_proxy(name, "pool", Upstreams(primary=echo, standby=origin), workdir)
        ws_base = ws_proxy.url("").replace("http://", "ws://")
    try:
        row.update(run_ws(ws_base + "/ws", args.messages))
    finally:
        if ws_proxy is not None:
            ws_proxy.group.stop()
    return row


async def _idle_phase(proxy: RunningProxy, args: argparse.Namespace) -> Row:
    async with hold_idle(proxy.port, args.idle_connections, path=SMALL_PATH) as held:
        rss_held = proxy.group.rss_bytes()
        # wrk in a thread: the loop meanwhile notices any held connection the proxy closes.
        wrk = await asyncio.to_thread(run_wrk, proxy.url(SMALL_PATH), args.duration)
        rss_held = max(rss_held, proxy.group.rss_bytes())
        await asyncio.sleep(0.2)  # a close caused by the end of wrk's run reaches us
        report = held.report()
    for reason, n in report.errors.most_common(5):
        print(f"  {proxy.name} idle connections: {n} x {reason}", file=sys.stderr)
    return {
        "idle_open_end": float(report.open_at_end),
        "idle_errors": report.error_count + wrk["wrk_socket_errors"] + wrk["wrk_non2xx"],
        "idle_rss_mb": _mb(rss_held),
        "idle_req_s": wrk["req_s"],
        "idle_open_s": report.seconds_to_open,
        "idle_error_kinds": "; ".join(f"{n} x {r}" for r, n in report.errors.most_common()),
    }


def bench_idle(name: str, origin: int, echo: int, workdir: Path, args: argparse.Namespace) -> Row:
    """Issue 13's idle phase on a fresh instance of ``name`` (see the module docstring)."""
    up = Upstreams(primary=origin, standby=echo)
    proxy = start_proxy(name, "pool", up, workdir, clients=args.idle_connections)
    try:
        time.sleep(args.settle)
        return asyncio.run(_idle_phase(proxy, args))
    finally:
        proxy.group.stop()


def start_signin_pair(
    origin: int, echo: int, workdir: Path
) -> tuple[RunningProxy, RunningProxy, str]:
    """Our proxy twice, the same flags, ``auth.mode`` none and oidc; and the session cookie the
    second accepts (a session lives at the Host it was issued at: wrk's 127.0.0.1:PORT)."""
    keys = workdir / "cookie-keys"
    keys.write_text(secrets.token_hex(32) + "\n")
    oidc = {
        # Never contacted: discovery happens at the first sign-in, and nobody signs in here.
        "DUMONT_AUTH_MODE": "oidc", "DUMONT_AUTH_ISSUER": "http://127.0.0.1:9",
        "DUMONT_AUTH_CLIENT_ID": "bench", "DUMONT_AUTH_CLIENT_SECRET": "bench",
        "DUMONT_AUTH_ALLOWED_EMAILS": "alice@example.com",
        "DUMONT_AUTH_COOKIE_KEYS_FILE": str(keys),
    }  # fmt: skip
    started: list[RunningProxy] = []
    try:
        for tag, env in (("signin-none", {}), ("signin-oidc", oidc)):
            port = free_port()
            argv = dumont_argv(port, free_port(), Upstreams(primary=origin, standby=echo))
            group = ProcessGroup(tag, argv, workdir / f"{tag}.log", cwd=REPO_DIR, env=env)
            started.append(RunningProxy(tag, port, group.start()))
            wait_http(f"http://127.0.0.1:{port}/__dumont/healthz", 20.0, watch=group.check_alive)
    except BaseException:
        for proxy in started:
            proxy.group.stop()
        raise
    book = SessionBook(Sealer(read_keys("bench", str(keys))), 3600.0, None)
    _, value = book.issue("alice@example.com", frozenset(), f"127.0.0.1:{started[1].port}")
    return started[0], started[1], f"{SESSION_COOKIE}={value}"


# wrk connections for the sign-in case: 32 as in the table above, and 1, where every request
# costs the same reads and writes whatever the rate. At 32 a proxy that gets less of a busy
# machine batches fewer requests per wake-up and pays more CPU for each: that noise can hide or
# fake a few us, one request at a time cannot.
SIGNIN_CONNECTIONS = (32, 1)


def bench_signin(origin: int, echo: int, workdir: Path, args: argparse.Namespace) -> Row:
    """CPU per request of our proxy without and with sign-in, in ``--signin-rounds`` rounds of
    short wrk runs against both at once (module docstring). At once, and many short rounds,
    because a busy machine's noise comes in bursts: one alternated run after the other let a
    burst land on one side only, and moved the difference by +-30 us at load 5."""
    plain, gated, cookie = start_signin_pair(origin, echo, workdir)
    headers = [(n, v) for n, v in browser_headers(cookie) if n not in ("Host", "Connection")]
    samples: dict[tuple[str, int], list[float]] = {}
    rates: dict[tuple[str, int], list[float]] = {}
    try:
        time.sleep(args.settle + 1.0)  # the first health checks pick the primary
        for proxy in (plain, gated):
            run_wrk(proxy.url(SMALL_PATH), max(args.warmup, 1), 32, 1, headers)
        for rnd in range(args.signin_rounds):
            pair = [("none", plain), ("oidc", gated)]
            print(f"sign-in round {rnd + 1}/{args.signin_rounds}", file=sys.stderr)
            for connections in SIGNIN_CONNECTIONS:
                # Both at once: whatever else the machine runs then weighs on both alike.
                befores = [proxy.group.cpu_seconds() for _, proxy in pair]
                with ThreadPoolExecutor(2) as pool:
                    runs = [
                        pool.submit(run_wrk, proxy.url(SMALL_PATH), args.signin_seconds,
                                    connections, 1, headers)
                        for _, proxy in pair
                    ]  # fmt: skip
                    answers = [run.result() for run in runs]
                for (mode, proxy), before, wrk in zip(pair, befores, answers, strict=True):
                    cpu = proxy.group.cpu_seconds() - before
                    if wrk["wrk_non2xx"] or wrk["wrk_socket_errors"]:
                        # A refused session would be a cheap 401: it must not pass for a request.
                        raise RuntimeError(f"auth {mode}: wrk saw non-2xx answers or errors")
                    key = (mode, connections)
                    samples.setdefault(key, []).append(1e6 * cpu / wrk["wrk_requests"])
                    rates.setdefault(key, []).append(wrk["req_s"])
    finally:
        plain.group.stop()
        gated.group.stop()
    # The gate alone, in this process: what the difference above is made of, without the noise
    # of two processes sharing a busy machine.
    alone = gate_alone(workdir / "cookie-keys")
    row: Row = {"gate_alone_us": alone["cached_us"], "first_open_us": alone["first_open_us"]}
    for (mode, connections), values in samples.items():
        row[f"cpu_us_{mode}_c{connections}"] = statistics.median(values)
        row[f"req_s_{mode}_c{connections}"] = statistics.median(rates[(mode, connections)])
        row[f"samples_{mode}_c{connections}"] = json.dumps([round(x, 1) for x in values])
    for c in SIGNIN_CONNECTIONS:
        # The median of each round's difference: the two sides of a round shared its noise.
        paired = map(operator.sub, samples[("oidc", c)], samples[("none", c)])
        row[f"signin_added_cpu_us_c{c}"] = statistics.median(paired)
    return row


def print_signin(row: Row, rounds: int) -> list[dict[str, Any]]:
    print(f"\nSign-in: our proxy, auth none vs oidc with a valid session cookie on every request;"
          f" wrk -t1 at both at once, medians of {rounds} round(s):\n")  # fmt: skip
    print("| connections | auth | CPU us/req | req/s | CPU us/req per round |")
    print("|---|---|---|---|---|")
    for c in SIGNIN_CONNECTIONS:
        for mode in ("none", "oidc"):
            cpu, rate = row[f"cpu_us_{mode}_c{c}"], row[f"req_s_{mode}_c{c}"]
            print(f"| {c} | {mode} | {cpu:.2f} | {rate:.0f} | {row[f'samples_{mode}_c{c}']} |")
        added = row[f"signin_added_cpu_us_c{c}"]
        print(f"| {c} | oidc - none (median of the rounds' differences) | {added:+.2f} | | |")
    bars = check_bars(
        row,
        {},
        [
            Bar(f"sign-in adds at most {SIGNIN_BAR:g} us of CPU per request ({c} connection(s))",
                f"signin_added_cpu_us_c{c}", "<=", SIGNIN_BAR)
            for c in SIGNIN_CONNECTIONS
        ],
    )  # fmt: skip
    print(
        f"\nThe gate alone, in-process (bench/signin.py): {row['gate_alone_us']:.2f} us a request"
        f" with an opened session, {row['first_open_us']:.1f} us to open a cookie first seen"
    )
    print(render_bars(bars), flush=True)
    return bars


def _frame_name(frame: str) -> str:
    """``handle (aiohttp/web_protocol.py:512)`` -> ``handle (aiohttp/web_protocol.py)``."""
    return re.sub(r":\d+\)$", ")", frame.strip())


def _package(frame: str) -> str:
    """``f (aiohttp/web_protocol.py)`` -> ``aiohttp``; ``write (libc.so.6)`` -> ``libc.so.6``."""
    match = re.search(r"\(([^()]*)\)$", frame)
    where = match[1] if match else frame
    return where.split("/", 1)[0] if "/" in where else where


def summarize_raw_profile(raw: str, top: int = 15) -> str:
    """Top functions by own samples and by samples including callees, from py-spy's raw output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return "py-spy recorded no samples"
    # Frames on every stack (runpy, asyncio.run, the server's main) say nothing: leave them out.
    total = Counter({frame: n for frame, n in total.items() if n < 0.99 * samples})
    packages: Counter[str] = Counter()
    for frame, n in own.items():
        packages[_package(frame)] += n
    parts = []
    for title, counter in (
        (f"Top {top} functions by own time", own),
        (f"Top {top} functions by time including callees", total),
        ("Own time by package", packages),
    ):
        parts.append(f"{title} ({samples} samples):")
        parts.extend(
            f"  {100 * n / samples:5.1f}%  {frame}" for frame, n in counter.most_common(top)
        )
    return "\n".join(parts)


def profile_dumont(origin: int, echo: int, workdir: Path, args: argparse.Namespace) -> str:
    """Run wrk against our proxy with py-spy attached; return the summary of the hot functions."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    proxy = start_proxy("dumont", "pool", Upstreams(primary=origin, standby=echo), workdir)
    out = args.profile_out or workdir / "dumont-profile.txt"
    spy = ProcessGroup(
        "py-spy",
        [
            py_spy, "record", "--pid", str(proxy.group.pgid), "--duration", str(args.duration),
            "--rate", "200", "--format", "raw", "--output", str(out), "--subprocesses",
            *(["--native"] if args.profile_native else []),
        ],
        workdir / "py-spy.log",
    )  # fmt: skip
    try:
        spy.start()
        time.sleep(1.0)  # py-spy attaches
        result = run_wrk(proxy.url(SMALL_PATH), args.duration)
        assert spy.popen is not None
        spy.popen.wait(timeout=args.duration + 30)
    finally:
        spy.stop()
        proxy.group.stop()
    if not out.exists():
        return f"py-spy wrote nothing; its log:\n{spy.log_tail()}"
    head = f"Profile of our proxy under wrk ({result['req_s']:,.0f} req/s while sampled), {out}:"
    return head + "\n" + summarize_raw_profile(out.read_text())


def show_configs(workdir: Path) -> None:
    up = Upstreams(primary=8001, standby=8002)
    for name in PEERS:
        print(f"## {name} (pool mode, upstream 127.0.0.1:8001)\n")
        print(render_config(name, "pool", 8080, up, workdir))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per cell")
    parser.add_argument("--runs", type=int, help="runs to take the median of (3; quick: 1)")
    parser.add_argument("--only", help="comma-separated proxies (direct always runs)")
    parser.add_argument("--json", type=Path, help="write every run and the medians here")
    parser.add_argument("--profile", action="store_true", help="py-spy our proxy under wrk")
    parser.add_argument("--profile-native", action="store_true", help="py-spy --native")
    parser.add_argument("--profile-out", type=Path, help="keep py-spy's raw output here")
    parser.add_argument("--show-configs", action="store_true", help="print peer configs, exit")
    parser.add_argument(
        "--idle-connections",
        type=int,
        metavar="N",
        help="idle keep-alive connections held while wrk runs (10000; quick: 1000; 0: skip)",
    )
    parser.add_argument(
        "--signin-rounds",
        type=int,
        metavar="N",
        help="rounds of the sign-in case, each both proxies at 32 and 1 connections (8; quick: 2)",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="print the medians over the runs of these --json files",
    )
    args = parser.parse_args()
    args.duration = 2 if args.quick else 10
    args.warmup = 0 if args.quick else 2
    args.messages = 500 if args.quick else 5000
    args.big_mib = 64 if args.quick else 256
    args.settle = 0.5 if args.quick else 2.0
    args.runs = args.runs or (1 if args.quick else 3)
    args.signin_rounds = args.signin_rounds or (2 if args.quick else 8)
    args.signin_seconds = 2 if args.quick else 3
    if args.idle_connections is None:
        args.idle_connections = 1000 if args.quick else 10_000
    args.sample = 0.2 if args.quick else 1.0  # seconds to watch what else runs
    names = args.only.split(",") if args.only else [*POOL_PROXIES, SIGNIN]
    unknown = set(names) - set(POOL_PROXIES) - {"direct", SIGNIN}
    if unknown:
        known = ", ".join([*POOL_PROXIES, SIGNIN])
        parser.error(f"unknown proxies {sorted(unknown)}; known: {known}")
    args.signin = SIGNIN in names
    proxies = [n for n in POOL_PROXIES if n in names]
    # "direct" is the peers' baseline: the sign-in case alone needs none of the table.
    args.names = ["direct", *proxies] if proxies or "direct" in names else []
    return args


def one_run(
    run: int, origin: int, echo: int, workdir: Path, args: argparse.Namespace
) -> dict[str, Row]:
    """Every proxy once; the order rotates per run so that none always runs first or last."""
    shift = run % len(args.names)
    rows: dict[str, Row] = {}
    for name in args.names[shift:] + args.names[:shift]:
        print(f"run {run + 1}/{args.runs}: {name}", file=sys.stderr, flush=True)
        try:
            rows[name] = bench_proxy(name, origin, echo, workdir, args)
        except Exception as exc:  # one broken proxy must not cost the other columns
            print(f"  {name} failed: {exc!r}", file=sys.stderr)
            rows[name] = {"error": repr(exc)}
        if name == "direct" or not args.idle_connections:
            continue
        try:
            rows[name].update(bench_idle(name, origin, echo, workdir, args))
        except Exception as exc:
            print(f"  {name} idle phase failed: {exc!r}", file=sys.stderr)
            rows[name]["error"] = f"idle phase: {exc!r}"
    direct = rows["direct"].get("ws_p50_us")
    for row in rows.values():
        p50 = row.get("ws_p50_us")
        if isinstance(p50, float) and isinstance(direct, float):
            row["ws_added_p50_us"] = p50 - direct
    return {n: rows[n] for n in args.names}


def worst_over_runs(runs: list[dict[str, Row]], medians: dict[str, Row]) -> None:
    """Replace the medians of WORST_OVER_RUNS's keys with the worst value over the runs."""
    for name, row in medians.items():
        for key, pick in WORST_OVER_RUNS.items():
            values = [v for run in runs if isinstance(v := run.get(name, {}).get(key), float)]
            if values:
                row[key] = pick(values)


def print_tables(medians: dict[str, Row], runs: int) -> None:
    print(f"\nMedians of {runs} run(s); (ratio) to the best of {', '.join(PEERS)}:\n")
    print(render_table(medians, COLUMNS, PEERS), flush=True)
    held = {n: r for n, r in medians.items() if n != "direct" and "idle_open_end" in r}
    if held:
        print("\nIdle connections held while wrk runs (errors, held: the worst run):\n")
        print(render_table(held, IDLE_COLUMNS, PEERS), flush=True)


def merge(paths: list[Path]) -> int:
    """The table over every run recorded in several ``--json`` files (runs of several sessions)."""
    runs = [run for path in paths for run in json.loads(path.read_text())["runs"]]
    print(f"Runs from {len(paths)} files:")
    medians = median_rows(runs)
    worst_over_runs(runs, medians)
    print_tables(medians, len(runs))
    return 0


def main() -> int:
    args = parse_args()
    if args.merge:
        return merge(args.merge)
    with tempfile.TemporaryDirectory(prefix="dumont-bench-") as tmp:
        workdir = Path(tmp)
        if args.show_configs:
            show_configs(workdir)
            return 0
        # The idle phase holds N sockets here; the proxies started below inherit the limit, and
        # HAProxy wants two per maxconn (N + 1024, bench/peers/proxies.py) or does not start.
        nofile = raise_nofile_limit(2 * args.idle_connections + 4096)
        if args.idle_connections + 512 > nofile:
            print(f"RLIMIT_NOFILE is {nofile}: too low for --idle-connections", file=sys.stderr)
            return 2
        machine = machine_info(args.sample)
        print(
            f"machine: {machine['cpus']} x {machine['cpu']}, load {machine['at_start']['loadavg']}"
        )
        with stopping([]) as groups:
            docroot = make_docroot(workdir, args.big_mib)
            origin_group, origin = start_nginx_origin(workdir, docroot)
            groups.append(origin_group)
            echo_group, echo = start_ws_echo(workdir)
            groups.append(echo_group)
            runs = (
                [one_run(run, origin, echo, workdir, args) for run in range(args.runs)]
                if args.names
                else []
            )
            medians = median_rows(runs) if runs else {}
            worst_over_runs(runs, medians)
            if medians:
                print_tables(medians, args.runs)
            bars: list[dict[str, Any]] = []
            every_bar = BARS + (idle_bars(args.idle_connections) if args.idle_connections else ())
            if "dumont" in medians:
                bars = check_bars(medians["dumont"], medians, every_bar)
                print("\nBars for our proxy:\n" + render_bars(bars), flush=True)
            signin: Row | None = None
            if args.signin:
                try:
                    signin = bench_signin(origin, echo, workdir, args)
                    bars += print_signin(signin, args.signin_rounds)
                except Exception as exc:  # the table above still stands
                    print(f"  sign-in case failed: {exc!r}", file=sys.stderr)
                    signin = {"error": repr(exc)}
            profile = profile_dumont(origin, echo, workdir, args) if args.profile else None
            if profile:
                print("\n" + profile)
    machine["at_end"] = machine_load(args.sample)
    print("\n" + load_summary(machine))
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        payload = {"benchmark": "throughput", "machine": machine, "settings": settings}
        write_json(
            args.json,
            {**payload, "runs": runs, "median": medians, "bars": bars, "profile": profile,
             "signin": signin},
        )  # fmt: skip
    errors = [row["error"] for run in runs for row in run.values() if "error" in row]
    if signin is not None and "error" in signin:
        errors.append(signin["error"])
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
