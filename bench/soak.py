"""Soak: 2,000 idle WebSockets and a mixed HTTP load through the proxy, then RSS, fds and errors.

    python bench/soak.py              # 10 minutes (the issue 7 bar)
    python bench/soak.py --quick      # 1 minute
    python bench/soak.py --minutes 3 --websockets 500 --json out.json

Everything runs on loopback: two local upstreams (this script in ``--serve-upstream`` mode), the
real proxy CLI, and the load in this process. The proxy's resident memory and open descriptors
are sampled every few seconds; the table compares the first sample after warm-up (every socket
open, one load interval done) with the last. Bars: no growth after warm-up (RSS within 10 % or
8 MB, descriptors within 16), no errors, HTTP served throughout, RSS under 300 MB. Exit
status 1 when a bar fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/support, shared with the tests

from tests.support.ports import free_port  # noqa: E402
from tests.support.processes import Proc  # noqa: E402

RSS_BAR_MB = 300.0
BODY = b"s" * 65536


# ------------------------------------------------------------------------------ the upstream


def upstream_app(name: str) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "lastHeartbeat": 0})

    async def small(_: web.Request) -> web.Response:
        return web.Response(text=f"small from {name}")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    async def download(_: web.Request) -> web.Response:
        return web.Response(body=b"d" * (1 << 20))

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application(client_max_size=1 << 20)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/small", small)
    app.router.add_post("/echo", echo)
    app.router.add_get("/download", download)
    app.router.add_get("/ws", websocket)
    return app


async def serve_upstream(name: str) -> None:
    runner = web.AppRunner(upstream_app(name), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    print(f"PORT {port}", flush=True)
    await asyncio.Event().wait()


# ---------------------------------------------------------------------------- processes


def spawn(argv: list[str], groups: list[Proc], stdout: Any = subprocess.PIPE) -> Proc:
    """`argv` in a process group of its own; Proc.stop() kills the group by its id."""
    popen = subprocess.Popen(
        argv, cwd=REPO, stdout=stdout, stderr=None, text=True, start_new_session=True
    )
    group = Proc(popen, 0)
    groups.append(group)
    return group


def start_upstream(name: str, groups: list[Proc]) -> int:
    group = spawn([sys.executable, __file__, "--serve-upstream", name], groups)
    assert group.popen.stdout is not None
    line = group.popen.stdout.readline()
    if not line.startswith("PORT "):
        raise RuntimeError(f"upstream {name} did not start")
    return int(line.split()[1])


def start_proxy(gpu: int, cpu: int, groups: list[Proc], websockets: int) -> tuple[int, int]:
    port = free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"dumont-soak-{port}.log", "w")  # noqa: SIM115
    group = spawn(
        [
            sys.executable,
            "-m",
            "proxy",
            "--primary",
            f"http://127.0.0.1:{gpu}",
            "--standby",
            f"http://127.0.0.1:{cpu}",
            "--listen",
            f"127.0.0.1:{port}",
            "--control-listen",
            f"127.0.0.1:{free_port()}",
            "--limits-max-connections-per-ip",
            str(websockets + 1000),
            "--log-level",
            "warning",
        ],
        groups,
        stdout=log,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if group.popen.poll() is not None:
            raise RuntimeError(f"the proxy exited {group.popen.returncode}; see {log.name}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            time.sleep(1.5)  # let the first health checks decide who serves
            return port, group.popen.pid
        time.sleep(0.1)
    raise RuntimeError("the proxy did not start")


def sample(pid: int) -> tuple[float, int]:
    """The proxy's resident memory (MB) and open file descriptors."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


# --------------------------------------------------------------------------------- the load


@dataclass
class Counts:
    http_ok: int = 0
    http_errors: int = 0
    ws_open: int = 0
    ws_errors: int = 0
    ws_echoes: int = 0
    last_errors: list[str] = field(default_factory=list)

    def error(self, kind: str, exc: BaseException | str) -> None:
        if kind == "ws":
            self.ws_errors += 1
        else:
            self.http_errors += 1
        if len(self.last_errors) < 10:
            self.last_errors.append(f"{kind}: {exc!r}"[:200])


async def hold_websocket(
    session: aiohttp.ClientSession, url: str, counts: Counts, stop: asyncio.Event, ping: float
) -> None:
    try:
        async with session.ws_connect(url, heartbeat=None) as ws:
            counts.ws_open += 1
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), ping)
                if stop.is_set():
                    break
                await ws.send_str("still here")  # an idle IDE socket: one message a while
                msg = await ws.receive(timeout=30)
                if msg.type is not WSMsgType.TEXT:
                    raise RuntimeError(f"echo lost: {msg.type!r}")
                counts.ws_echoes += 1
            counts.ws_open -= 1
    except Exception as exc:
        counts.error("ws", exc)


async def http_worker(
    session: aiohttp.ClientSession, base: str, counts: Counts, stop: asyncio.Event, n: int
) -> None:
    kinds = ("small", "echo", "small", "download")
    i = n
    while not stop.is_set():
        kind = kinds[i % len(kinds)]
        i += 1
        try:
            if kind == "echo":
                async with session.post(f"{base}/echo", data=BODY) as r:
                    ok = r.status == 200 and len(await r.read()) == len(BODY)
            else:
                async with session.get(f"{base}/{kind}") as r:
                    ok = r.status == 200 and bool(await r.read())
            if ok:
                counts.http_ok += 1
            else:
                counts.error("http", f"{kind}: status {r.status}")
        except Exception as exc:
            counts.error("http", exc)


@dataclass
class Sample:
    t: float
    rss_mb: float
    fds: int
    ws_open: int
    http_ok: int
    errors: int


async def soak(args: argparse.Namespace, port: int, pid: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    counts = Counts()
    stop = asyncio.Event()
    samples: list[Sample] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session, asyncio.TaskGroup() as tg:
        for i in range(0, args.websockets, 100):  # open in batches: a thundering herd is not idle
            for _ in range(min(100, args.websockets - i)):
                tg.create_task(hold_websocket(session, f"{base}/ws", counts, stop, args.ping))
            await asyncio.sleep(0.2)
        for n in range(args.workers):
            tg.create_task(http_worker(session, base, counts, stop, n))
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < args.duration:
            await asyncio.sleep(min(args.every, args.duration - elapsed))
            rss, fds = sample(pid)
            errors = counts.http_errors + counts.ws_errors
            samples.append(Sample(round(time.monotonic() - started, 1), round(rss, 1), fds,
                                  counts.ws_open, counts.http_ok, errors))  # fmt: skip
            print(f"  {samples[-1]}", flush=True)
        stop.set()
    warm = next((s for s in samples if s.t >= args.warmup), samples[0])
    return {"samples": samples, "warm": warm, "end": samples[-1], "counts": counts}


def verdict(result: dict[str, Any], websockets: int) -> list[tuple[str, bool, str]]:
    warm, end, counts = result["warm"], result["end"], result["counts"]
    growth = end.rss_mb - warm.rss_mb
    return [
        ("no errors", end.errors == 0, f"{end.errors} ({counts.last_errors[:3]})"),
        ("all WebSockets held", warm.ws_open == websockets and end.ws_open == websockets,
         f"{warm.ws_open} -> {end.ws_open} of {websockets}"),
        ("RSS under 300 MB", end.rss_mb < RSS_BAR_MB, f"{end.rss_mb:.1f} MB"),
        ("no RSS growth after warm-up", growth <= max(8.0, 0.1 * warm.rss_mb),
         f"{warm.rss_mb:.1f} -> {end.rss_mb:.1f} MB ({growth:+.1f})"),
        ("no descriptor growth", end.fds - warm.fds <= 16, f"{warm.fds} -> {end.fds}"),
        ("HTTP served all along", end.http_ok > warm.http_ok,
         f"{warm.http_ok} by warm-up, {end.http_ok} at the end"),
    ]  # fmt: skip


def report(
    result: dict[str, Any], bars: list[tuple[str, bool, str]], args: argparse.Namespace
) -> None:
    warm, end = result["warm"], result["end"]
    print(f"\nsoak: {args.websockets} WebSockets, {args.workers} HTTP workers, {args.duration:g} s")
    print(f"{'':12}{'t (s)':>8}{'RSS MB':>9}{'fds':>7}{'WS open':>9}{'HTTP ok':>10}{'errors':>8}")
    for label, s in (("after warm-up", warm), ("end", end)):
        print(
            f"{label:12}{s.t:>8}{s.rss_mb:>9}{s.fds:>7}{s.ws_open:>9}{s.http_ok:>10}{s.errors:>8}"
        )
    for name, ok, detail in bars:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")


def raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))  # children inherit it
    if target < needed:
        sys.exit(f"soak: the open-file limit {target} is below the {needed} this run needs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="1 minute")
    parser.add_argument("--seconds", type=float, help="overrides --minutes (smoke tests)")
    parser.add_argument("--websockets", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument("--ping", type=float, default=30.0, help="seconds between WS messages")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--json", type=Path, help="write the samples and bars here")
    parser.add_argument("--serve-upstream", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        asyncio.run(serve_upstream(args.serve_upstream))
        return 0
    args.duration = args.seconds or (60.0 if args.quick else args.minutes * 60)
    args.every = min(args.every, max(1.0, args.duration / 6))
    args.warmup = min(60.0, args.duration / 3)
    raise_nofile(3 * args.websockets + 1024)
    # SIGTERM unwinds through the finally below, which kills every process group started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("soak: terminated"))
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    groups: list[Proc] = []
    try:
        gpu, cpu = start_upstream("gpu", groups), start_upstream("cpu", groups)
        port, pid = start_proxy(gpu, cpu, groups, args.websockets)
        print(f"soak: proxy pid {pid} on port {port}; sampling every {args.every:g} s", flush=True)
        result = asyncio.run(soak(args, port, pid))
    finally:
        for group in groups:
            group.stop()
    bars = verdict(result, args.websockets)
    report(result, bars, args)
    if args.json:
        payload = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "samples": [asdict(s) for s in result["samples"]],
            "counts": asdict(result["counts"]),
            "bars": [{"name": n, "ok": ok, "detail": d} for n, ok, d in bars],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if all(ok for _, ok, _ in bars) else 1


if __name__ == "__main__":
    sys.exit(main())
