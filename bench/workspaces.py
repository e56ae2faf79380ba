#!/usr/bin/env python3
"""Many workspaces behind one proxy (issue 15, "Scale"): a thousand workspaces, each failing over
on its own, and what the other 999 notice.

Backends: one nginx listening on two ports per workspace (``/healthz`` 200, logged with the time
it arrived; ``/`` answers ``HOST PORT``, so every answer says which Host asked and which backend
served it). One workspace, the victim (``ws0000``), has two backends of its own instead, each its
own process group (bench/peers/servers.py's named backends "gpu" and "cpu"), so killing its
primary hurts only that workspace. Hosts are ``wsNNNN.bench.test``; health checks every second
(the victim: 0.5 s, fall 2, rise 2, as bench/failover.py). Phases:

1. **Scale**: the proxy starts with N workspaces from ``[workspaces.NAME]`` tables. Start-up to
   all-healthy (from the proxy's start to ``GET /admin/workspaces`` showing both backends of
   every workspace healthy), then idle: CPU of its process group over ``--idle`` seconds (% of
   one core), RSS, and when the probes arrived at nginx (their time modulo 1 s, in 20 ms bins:
   a burst shows as a full bin).
2. **Kill one workspace's primary under load**: wrk rotates the Host header over the N-1 others
   (a Lua script; every answer counted by its body, so each Host's answers, and any answer from
   another workspace's backend, are known), while a client polls the victim every 10 ms (as
   bench/failover.py). The victim's primary dies loud (SIGKILL) or silent (SIGSTOP) at a random
   moment; the victim's switch time and failed requests, and the others' failures and p99 next
   to a wrk run without a fault just before. The primary is then revived and failed back.
3. **A workspace added under load**: during a wrk run over the others, ``PUT
   /admin/workspaces/NAME``; the time from sending the PUT to the first 200 by its Host.
4. **Routing by Host**: alternating runs, each a fresh proxy, of one workspace and of N
   workspaces (all on nginx), the same wrk script rotating over 1 or N Hosts, the same nginx:
   req/s, latency, CPU per request, and CPU per request net of the health checks' idle CPU.

Every table notes the 1-minute load average when it was measured. Usage:
``.venv/bin/python bench/workspaces.py [--quick] [--workspaces N] [--runs N] [--json F]
[--profile]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector
from failover import (
    DEATHS,
    POLL_INTERVAL,
    PRIMARY,
    REQUEST_TIMEOUT,
    SIGNALS,
    STANDBY,
    Answer,
    Death,
    measure,
)
from peers.idle import raise_nofile_limit
from peers.procs import BENCH_DIR, REPO_DIR, ProcessGroup, stopping, wait_http
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
from peers.upstreams import nginx_paths, nginx_temp_paths, start_backends
from throughput import summarize_raw_profile

from tests.support.ports import free_port

DOMAIN = "bench.test"
VICTIM = "ws0000"
SLOT = 0.02  # the proxy's probe grid (proxy.health.BATCH_SLOT), the histogram's bin
ADD_PREFIX = "wsadd"
RISE = 3  # the proxy's default, which the N workspaces keep


def host_of(name: str) -> str:
    return f"{name}.{DOMAIN}"


def names(count: int) -> list[str]:
    return [f"ws{i:04d}" for i in range(count)]


def load1() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


# ------------------------------------------------------------------------------------ the bed


def reserve_ports(count: int) -> list[int]:
    """``count`` ports free right now, below the kernel's ephemeral range (32768 and up here),
    so that no test picking a port with bind(0) meanwhile can take one before nginx binds it."""
    start = random.randrange(10_000, 30_000 - count * 2)
    ports: list[int] = []
    port = start
    while len(ports) < count:
        if port >= 32_768:
            raise RuntimeError(f"fewer than {count} free ports from {start} to 32767")
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                pass
            else:
                ports.append(port)
        port += 1
    return ports


def backends_conf(workdir: Path, ports: list[int]) -> str:
    """nginx on every port of ``ports``: /healthz logged with its arrival time, / says who."""
    listens = "".join(f"        listen 127.0.0.1:{port} backlog=1024;\n" for port in ports)
    # Listening sockets take a connection slot each in nginx, and every backend has a probe
    # connection and a pool of its own in the proxy.
    slots = len(ports) * 4 + 4096
    return f"""{nginx_paths(workdir, "backends")}worker_processes 1;
worker_rlimit_nofile {slots + 1024};
events {{ worker_connections {slots}; }}
http {{
    access_log off;
{nginx_temp_paths(workdir, "backends")}    keepalive_requests 10000000;
    keepalive_timeout 300s;
    default_type text/plain;
    log_format probe '$msec $server_port';
    server {{
{listens}        location = /healthz {{
            access_log {workdir}/probes.log probe buffer=256k flush=1s;
            return 200 "ok\\n";
        }}
        location / {{ return 200 "$host $server_port\\n"; }}
    }}
}}
"""


@dataclass
class Bed:
    """The backends every phase shares: nginx for the many, two processes for the victim."""

    workdir: Path
    count: int
    ports: list[int]  # two per workspace (primary, standby), then two spares for the API phase
    nginx: ProcessGroup
    victim: dict[str, tuple[ProcessGroup, int]]  # "gpu"/"cpu" -> (process, port)
    groups: list[ProcessGroup]

    def pair(self, index: int) -> tuple[int, int]:
        return self.ports[2 * index], self.ports[2 * index + 1]

    @property
    def spare(self) -> tuple[int, int]:
        return self.ports[-2], self.ports[-1]

    def owner(self) -> dict[int, str]:
        """Which workspace each nginx port serves (the spares: the workspace the API adds)."""
        found = {port: name for i, name in enumerate(names(self.count)) for port in self.pair(i)}
        found.update(dict.fromkeys(self.spare, ADD_PREFIX))
        return found

    def revive_victim(self, death: Death) -> None:
        """A primary killed with SIGKILL comes back on its port; a frozen one is resumed."""
        group, port = self.victim[PRIMARY]
        if death == "silent":
            group.signal(signal.SIGCONT)
            return
        argv = [sys.executable, "-m", "peers.servers", "backend", "--name", PRIMARY,
                "--port", str(port)]  # fmt: skip
        env = {"PYTHONPATH": str(BENCH_DIR)}
        log = self.workdir / f"victim-{PRIMARY}-{time.monotonic_ns()}.log"
        fresh = ProcessGroup(f"victim-{PRIMARY}", argv, log, cwd=BENCH_DIR, env=env).start()
        self.groups.append(fresh)
        self.victim[PRIMARY] = (fresh, port)
        wait_http(f"http://127.0.0.1:{port}/healthz", watch=fresh.check_alive)


@contextlib.contextmanager
def bed(workdir: Path, count: int) -> Iterator[Bed]:
    with stopping([]) as groups:
        ports = reserve_ports(2 * count + 2)
        conf = workdir / "backends-nginx.conf"
        conf.write_text(backends_conf(workdir, ports))
        argv = ["nginx", "-c", str(conf), "-p", str(workdir)]
        nginx = ProcessGroup("backends-nginx", argv, workdir / "backends-nginx.log").start()
        groups.append(nginx)
        for port in (ports[0], ports[-1]):
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30.0, watch=nginx.check_alive)
        victim = {}
        for (group, port), name in zip(
            start_backends(workdir, ["gpu", "cpu"]), ("gpu", "cpu"), strict=True
        ):
            groups.append(group)
            victim[name] = (group, port)
        yield Bed(workdir, count, ports, nginx, victim, groups)


# ---------------------------------------------------------------------------------- the proxy


@dataclass
class Dumont:
    group: ProcessGroup
    port: int
    control: int
    started_at: float  # time.monotonic() just before the process was started
    started_wall: float  # the same moment by the wall clock (nginx logs by it)
    expected: set[str] = field(default_factory=set)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def admin(self, path: str, method: str = "GET", body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.control}{path}", data=data, method=method
        )
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10.0) as resp:
            return json.load(resp)

    def workspaces(self) -> list[dict[str, Any]]:
        return list(self.admin("/admin/workspaces")["workspaces"])


def proxy_toml(port: int, control: int, interval: float, tables: list[str]) -> str:
    head = [
        f'listen = "127.0.0.1:{port}"',
        f'control_listen = "127.0.0.1:{control}"',
        "",
        "[health]",
        f"interval = {interval}",
        "",
    ]
    return "\n".join(head + tables) + "\n"


def workspace_table(name: str, primary: int, standby: int, health: str = "") -> str:
    table = (
        f'[workspaces.{name}]\nhosts = ["{host_of(name)}"]\n'
        f'primary = "http://127.0.0.1:{primary}"\nstandby = "http://127.0.0.1:{standby}"\n'
    )
    if health:
        table += f"[workspaces.{name}.health]\n{health}\n"
    return table


def bed_tables(the_bed: Bed, count: int, *, with_victim: bool) -> list[str]:
    """``count`` workspaces on nginx; with the victim, ws0000 gets its own two backends."""
    tables = []
    for index, name in enumerate(names(count)):
        if with_victim and name == VICTIM:
            gpu, cpu = the_bed.victim["gpu"][1], the_bed.victim["cpu"][1]
            tables.append(workspace_table(name, gpu, cpu, "interval = 0.5\nfall = 2\nrise = 2"))
        else:
            tables.append(workspace_table(name, *the_bed.pair(index)))
    return tables


def start_dumont(workdir: Path, tag: str, tables: list[str], interval: float) -> Dumont:
    port, control = free_port(), free_port()
    config = workdir / f"{tag}.toml"
    config.write_text(proxy_toml(port, control, interval, tables))
    argv = [sys.executable, "-m", "proxy", "--config", str(config)]
    started_at, started_wall = time.monotonic(), time.time()
    group = ProcessGroup(tag, argv, workdir / f"{tag}.log", cwd=REPO_DIR).start()
    expected = {table.split("]", 1)[0].removeprefix("[workspaces.") for table in tables}
    return Dumont(group, port, control, started_at, started_wall, expected)


def wait_all_healthy(proxy: Dumont, timeout: float) -> float:
    """Seconds from the proxy's start until every workspace has both backends healthy."""
    deadline = proxy.started_at + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        proxy.group.check_alive()
        try:
            found = proxy.workspaces()
        except OSError as exc:
            last = repr(exc)
        else:
            healthy = {w["name"] for w in found if all(w["healthy"].values())}
            if healthy >= proxy.expected:
                return time.monotonic() - proxy.started_at
            last = f"{len(healthy & proxy.expected)} of {len(proxy.expected)} healthy"
        time.sleep(0.1)
    raise TimeoutError(f"not all workspaces healthy {timeout} s after start ({last})")


def switched(proxy: Dumont, skip: tuple[str, ...] = ()) -> float:
    """How many workspaces (but ``skip``) switched backends since the start: a false failover
    (checks timed out while the proxy was too busy to read the answers) shows here."""
    found = proxy.workspaces()
    return float(sum(1 for w in found if w["last_switch"] is not None and w["name"] not in skip))


def cpu_percent(group: ProcessGroup, seconds: float) -> float:
    before, start = group.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    return 100 * (group.cpu_seconds() - before) / (time.monotonic() - start)


# ----------------------------------------------------------------------------- probe spread


def probe_spread(log: Path, since: float, until: float) -> Row:
    """When the probes reached nginx between two wall-clock times, modulo one second."""
    times = []
    for line in log.read_text().splitlines():
        stamp = float(line.split()[0])
        if since <= stamp < until:
            times.append(stamp)
    bins = Counter(int((t % 1.0) / SLOT) for t in times)
    per_bin = [bins.get(i, 0) for i in range(int(1 / SLOT))]
    total = max(1, len(times))
    window = round(0.1 / SLOT)  # the busiest 100 ms, wrapping around the second
    busiest = max(
        sum(per_bin[(i + j) % len(per_bin)] for j in range(window)) for i in range(len(per_bin))
    )
    row: Row = {
        "probes_per_s": len(times) / (until - since),
        "busiest_slot_pct": 100 * max(per_bin) / total,
        "busiest_100ms_pct": 100 * busiest / total,
        "empty_slots": float(sum(1 for n in per_bin if n == 0)),
    }
    for tenth in range(10):
        share = sum(per_bin[tenth * window : (tenth + 1) * window])
        row[f"tenth_{tenth}"] = 100 * share / total
    return row


# ------------------------------------------------------------------------------------- wrk

# Rotates the Host header over the names in a file (``wrk ... URL -- FILE``). With COUNT, every
# answer is counted by its body (nginx says "HOST PORT"), every other status by its code.
WRK_LUA = """
local requests, n, i = {}, 0, 0
local threads = {}
counts, failed = {}, {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("offset", #threads * 7919)
end

function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    requests[n] = wrk.format("GET", "/", {Host = line})
  end
  i = (offset or 0) % n
end

function request()
  i = i % n + 1
  return requests[i]
end
"""
WRK_COUNT_LUA = """
function response(status, headers, body)
  if status == 200 then
    counts[body] = (counts[body] or 0) + 1
  else
    failed[status] = (failed[status] or 0) + 1
  end
end
"""
WRK_DONE_LUA = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WSB summary %d %d %d %d %d %d %d\\n", summary.duration,
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout))
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("WSB latency %g %d\\n", p, latency:percentile(p)))
  end
  for _, t in ipairs(threads) do
    for body, c in pairs(t:get("counts")) do
      io.write(string.format("WSB answer %d %s\\n", c, (body:gsub("%s+$", ""))))
    end
    for status, c in pairs(t:get("failed")) do
      io.write(string.format("WSB status %d %d\\n", c, status))
    end
  end
end
"""


@dataclass
class WrkResult:
    req_s: float
    requests: int
    socket_errors: int
    non2xx: int
    p50_ms: float
    p99_ms: float
    answers: Counter[str]  # body -> count (counting runs only)
    statuses: Counter[int]


def run_wrk(
    url: str, hosts: list[str], seconds: float, workdir: Path, *, count: bool = False
) -> WrkResult:
    """wrk -t2 -c32 (as bench/throughput.py) rotating the Host header over ``hosts``."""
    script = workdir / ("wrk-count.lua" if count else "wrk.lua")
    script.write_text(WRK_LUA + (WRK_COUNT_LUA if count else "") + WRK_DONE_LUA)
    hosts_file = workdir / f"hosts-{time.monotonic_ns()}.txt"
    hosts_file.write_text("".join(f"{h}\n" for h in hosts))
    argv = ["wrk", "-t2", "-c32", f"-d{seconds:g}s", "-s", str(script), url, "--", str(hosts_file)]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    summary, latency = [], {}
    answers: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    for line in out.splitlines():
        if not line.startswith("WSB "):
            continue
        _, kind, rest = line.split(" ", 2)
        if kind == "summary":
            summary = [int(v) for v in rest.split()]
        elif kind == "latency":
            pct, micros = rest.split()
            latency[pct] = int(micros) / 1000
        elif kind == "answer":
            n, body = rest.split(" ", 1)
            answers[body] += int(n)
        elif kind == "status":
            n, code = rest.split()
            statuses[int(code)] += int(n)
    if not summary:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    duration_us, requests, connect, read, write, status, timeout = summary
    return WrkResult(
        req_s=requests / (duration_us / 1e6),
        requests=requests,
        socket_errors=connect + read + write + timeout,
        non2xx=status,
        p50_ms=latency["50"],
        p99_ms=latency["99"],
        answers=answers,
        statuses=statuses,
    )


def judge_answers(result: WrkResult, hosts: list[str], owner: dict[int, str]) -> Row:
    """Per Host: answers that came from another workspace's backend, Hosts never answered."""
    answered: Counter[str] = Counter()
    wrong = 0
    for body, n in result.answers.items():
        host, _, port = body.partition(" ")
        name = owner.get(int(port)) if port.isdigit() else None
        if name is None or host_of(name) != host:
            wrong += n
        answered[host] += n
    return {
        "others_failed": float(result.non2xx + result.socket_errors),
        "others_wrong_backend": float(wrong),
        "others_unanswered_hosts": float(sum(1 for h in hosts if answered[h] == 0)),
        "others_p99_ms": result.p99_ms,
        "others_req_s": result.req_s,
    }


# ----------------------------------------------------------------- the victim, under load


async def poll_host(url: str, host: str, answers: list[Answer], stop: asyncio.Event) -> None:
    """bench/failover.py's client with a Host header: one GET every 10 ms over keep-alive."""
    timeout = ClientTimeout(total=REQUEST_TIMEOUT)
    headers = {"Host": host}
    async with ClientSession(connector=TCPConnector(limit=1), timeout=timeout) as session:
        while not stop.is_set():
            start = time.monotonic()
            try:
                async with session.get(url, headers=headers) as resp:
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


async def kill_under_load(
    proxy: Dumont, others: list[str], fault: Callable[[], None], args: argparse.Namespace
) -> tuple[Row, WrkResult]:
    """wrk over the others while the victim is polled; its primary dies at a random moment."""
    answers: list[Answer] = []
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        load = tasks.create_task(
            asyncio.to_thread(run_wrk, proxy.url(), others, args.duration, args.workdir, count=True)
        )
        poller = tasks.create_task(poll_host(proxy.url(), host_of(VICTIM), answers, stop))
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
        await asyncio.wait([poller], timeout=2.0 if time.monotonic() < deadline else 0.0)
        poller.cancel()
        result = await load
    return measure(answers, fault_at), result


def victim_serving_primary(proxy: Dumont, timeout: float) -> None:
    """After a revival: the primary healthy again, then a commanded failback, then serving."""
    path = f"/admin/workspaces/{VICTIM}"
    deadline = time.monotonic() + timeout
    asked = False
    while time.monotonic() < deadline:
        found = proxy.admin(path)
        if found["state"] == "serving_primary":
            return
        if found["healthy"].get("primary") and not asked and found["state"] == "serving_standby":
            proxy.admin(f"{path}/failback", "POST", {"reason": "bench: primary revived"})
            asked = True
        time.sleep(0.05)
    raise TimeoutError(f"{VICTIM} did not serve its primary again within {timeout} s")


def failover_phase(
    proxy: Dumont, the_bed: Bed, others: list[str], args: argparse.Namespace
) -> dict[str, list[Row]]:
    """Per death: a wrk run without a fault, then one with the victim's primary killed."""
    rows: dict[str, list[Row]] = {death: [] for death in DEATHS}
    owner = the_bed.owner()
    for run in range(args.runs):
        for death in DEATHS:
            print(f"kill under load, run {run + 1}/{args.runs}: {death}", file=sys.stderr)
            victim_serving_primary(proxy, timeout=30.0)
            load_before = load1()
            calm = run_wrk(proxy.url(), others, args.duration, args.workdir, count=True)
            fault = functools.partial(the_bed.victim[PRIMARY][0].signal, SIGNALS[death])
            switch, loaded = asyncio.run(kill_under_load(proxy, others, fault, args))
            row: Row = {f"victim_{k}": v for k, v in switch.items()}
            row.update(judge_answers(loaded, others, owner))
            row["calm_p99_ms"] = calm.p99_ms
            row["calm_req_s"] = calm.req_s
            row["calm_failed"] = float(calm.non2xx + calm.socket_errors)
            row["p99_ratio"] = loaded.p99_ms / calm.p99_ms
            row["load"] = f"{load_before}-{load1()}"
            rows[death].append(row)
            proxy.group.check_alive()
            the_bed.revive_victim(death)
    return rows


# ------------------------------------------------------------------- a workspace added live


async def _first_200(url: str, host: str, expect: tuple[int, int], cap: float) -> float | None:
    """Poll ``host`` every 10 ms until one of ``expect`` ports answers; seconds waited."""
    started = time.monotonic()
    async with ClientSession(timeout=ClientTimeout(total=2.0)) as session:
        while time.monotonic() - started < cap:
            with contextlib.suppress(ClientError, TimeoutError):
                async with session.get(url, headers={"Host": host}) as resp:
                    body = (await resp.text()).strip()
                    if resp.status == 200 and body.rpartition(" ")[2] in map(str, expect):
                        return time.monotonic() - started
            await asyncio.sleep(POLL_INTERVAL)
    return None


async def add_under_load(
    proxy: Dumont, the_bed: Bed, others: list[str], name: str, args: argparse.Namespace
) -> Row:
    primary, standby = the_bed.spare
    document = {
        "hosts": [host_of(name)],
        "primary": f"http://127.0.0.1:{primary}",
        "standby": f"http://127.0.0.1:{standby}",
    }
    async with asyncio.TaskGroup() as tasks:
        load = tasks.create_task(
            asyncio.to_thread(run_wrk, proxy.url(), others, args.duration, args.workdir, count=True)
        )
        await asyncio.sleep(args.warmup)
        started = time.monotonic()
        put = tasks.create_task(
            asyncio.to_thread(proxy.admin, f"/admin/workspaces/{name}", "PUT", document)
        )
        serving = await _first_200(proxy.url(), host_of(name), the_bed.spare, cap=10.0)
        put_s = None
        with contextlib.suppress(Exception):
            await put
            put_s = time.monotonic() - started
        result = await load
    await asyncio.to_thread(proxy.admin, f"/admin/workspaces/{name}", "DELETE")
    row: Row = {
        "add_first_200_s": float("inf") if serving is None else serving,
        "add_put_answered_s": put_s,
    }
    row.update(judge_answers(result, others, the_bed.owner()))
    return row


def add_phase(
    proxy: Dumont, the_bed: Bed, others: list[str], args: argparse.Namespace
) -> list[Row]:
    rows = []
    for run in range(args.runs):
        print(f"workspace added under load, run {run + 1}/{args.runs}", file=sys.stderr)
        load_before = load1()
        row = asyncio.run(add_under_load(proxy, the_bed, others, f"{ADD_PREFIX}{run}", args))
        row["load"] = f"{load_before}-{load1()}"
        rows.append(row)
    return rows


# ---------------------------------------------------------------------- the scale phase


def profile_idle(proxy: Dumont, args: argparse.Namespace) -> str:
    """py-spy on the idle proxy: where the health checks' CPU goes."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = args.workdir / "idle-profile.txt"
    argv = [py_spy, "record", "--pid", str(proxy.group.pgid), "--duration", str(round(args.idle)),
            "--rate", "250", "--format", "raw", "--output", str(out), "--nonblocking"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=args.idle + 60, check=False)
    if not out.exists():
        return f"py-spy wrote nothing: {done.stderr.strip()[-500:]}"
    return f"Profile of the idle proxy ({out}):\n" + summarize_raw_profile(out.read_text(), 25)


def spread_row(proxy: Dumont, log: Path, since: float, until: float) -> Row:
    time.sleep(max(0.0, until + 1.5 - time.time()))  # nginx flushes its log every second
    row = probe_spread(log, since, until)
    row["after_start_s"] = since - proxy.started_wall
    return row


def scale_phase(the_bed: Bed, args: argparse.Namespace) -> dict[str, Any]:
    """Start-up, idle CPU, RSS and probe spread; then the kills and the API adds under load;
    then the probe spread once more, idle again, minutes after the start."""
    tables = bed_tables(the_bed, args.workspaces, with_victim=True)
    proxy = start_dumont(args.workdir, "dumont-scale", tables, args.interval)
    the_bed.groups.append(proxy.group)
    log = args.workdir / "probes.log"
    spreads: dict[str, Row] = {}
    try:
        scale: Row = {"startup_s": wait_all_healthy(proxy, timeout=args.startup_cap)}
        scale["startup_cpu_s"] = proxy.group.cpu_seconds()
        scale["startup_load"] = load1()
        scale["switched_at_start"] = switched(proxy)
        time.sleep(args.settle)
        since, load_before = time.time(), load1()
        scale["idle_cpu_pct"] = cpu_percent(proxy.group, args.idle)
        until = time.time()
        scale["rss_mb"] = proxy.group.rss_bytes() / (1 << 20)
        scale["load"] = f"{load_before}-{load1()}"
        early = spread_row(proxy, log, since, until)
        early["load"] = scale["load"]
        scale.update(early)
        scale["cpu_us_per_probe"] = (
            1e4 * float(scale["idle_cpu_pct"] or 0) / max(1.0, float(early["probes_per_s"] or 0))
        )
        profile = profile_idle(proxy, args) if args.profile else None
        others = [host_of(n) for n in names(args.workspaces) if n != VICTIM]
        kills = failover_phase(proxy, the_bed, others, args)
        adds = add_phase(proxy, the_bed, others, args)
        scale["rss_end_mb"] = proxy.group.rss_bytes() / (1 << 20)
        scale["switched_others"] = switched(proxy, skip=(VICTIM,))
        since, load_before = time.time(), load1()
        time.sleep(args.late_window)
        late = spread_row(proxy, log, since, time.time())
        late["load"] = f"{load_before}-{load1()}"
        scale["late_busiest_100ms_pct"] = late["busiest_100ms_pct"]
        spreads = {"idle, after start-up": early, "idle, after the load phases": late}
    except BaseException:
        print(f"proxy log tail:\n{proxy.group.log_tail()}", file=sys.stderr)
        raise
    finally:
        proxy.group.stop()
    return {"scale": scale, "spreads": spreads, "kills": kills, "adds": adds, "profile": profile}


# ------------------------------------------------------------------- routing by Host


@dataclass(frozen=True)
class Routing:
    """One shape of the routing runs: how many workspaces, and the Hosts wrk rotates over."""

    label: str
    count: int
    hosts: list[str]


def routing_shapes(count: int) -> list[Routing]:
    """One workspace and one Host (the issue's baseline); one workspace and ``count`` spellings
    of its Host (``NAME:1``, ``NAME:2``...: the port is ignored), so that, as with ``count``
    workspaces, every request on a connection names another Host; and ``count`` workspaces."""
    one = host_of(names(1)[0])
    return [
        Routing(routing_label(1), 1, [one]),
        Routing(
            f"1 workspace, {count:,} Host spellings", 1, [f"{one}:{i + 1}" for i in range(count)]
        ),
        Routing(routing_label(count), count, [host_of(n) for n in names(count)]),
    ]


def routing_run(the_bed: Bed, shape: Routing, args: argparse.Namespace) -> Row:
    """A fresh proxy with ``shape.count`` workspaces on nginx; wrk rotating over its Hosts."""
    tables = bed_tables(the_bed, shape.count, with_victim=False)
    proxy = start_dumont(args.workdir, f"dumont-routing-{shape.count}", tables, args.interval)
    try:
        row: Row = {"startup_s": wait_all_healthy(proxy, timeout=args.startup_cap)}
        row["startup_cpu_s"] = proxy.group.cpu_seconds()
        time.sleep(args.settle)
        load_before = load1()
        idle_pct = cpu_percent(proxy.group, args.routing_idle)
        run_wrk(proxy.url(), shape.hosts, args.wrk_warmup, args.workdir)
        cpu = proxy.group.cpu_seconds()
        result = run_wrk(proxy.url(), shape.hosts, args.duration, args.workdir)
        cpu = proxy.group.cpu_seconds() - cpu
        proxy.group.check_alive()
        row["switched"] = switched(proxy)
    finally:
        proxy.group.stop()
    row.update(
        req_s=result.req_s,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        failed=float(result.non2xx + result.socket_errors),
        idle_cpu_pct=idle_pct,
        cpu_us_per_req=1e6 * cpu / result.requests,
        net_cpu_us_per_req=1e6 * (cpu - idle_pct / 100 * args.duration) / result.requests,
        load=f"{load_before}-{load1()}",
    )
    return row


def routing_phase(the_bed: Bed, args: argparse.Namespace) -> list[dict[str, Row]]:
    """The shapes alternate, the order rotating each run, to cancel drift."""
    shapes = routing_shapes(args.workspaces)
    runs = []
    for run in range(args.runs):
        shift = run % len(shapes)
        rows = {}
        for shape in shapes[shift:] + shapes[:shift]:
            print(f"routing run {run + 1}/{args.runs}: {shape.label}", file=sys.stderr)
            rows[shape.label] = routing_run(the_bed, shape, args)
        runs.append({shape.label: rows[shape.label] for shape in shapes})
    return runs


def routing_label(count: int) -> str:
    return "1 workspace" if count == 1 else f"{count:,} workspaces"


# --------------------------------------------------------------------------------- report

SCALE_COLUMNS = (
    Column("startup_s", "start-up to all healthy s", digits=2),
    Column("startup_cpu_s", "its CPU s", digits=2),
    Column("switched_at_start", "switched at start"),
    Column("switched_others", "others switched by the end"),
    Column("startup_load", "load at start-up"),
    Column("idle_cpu_pct", "idle CPU % of a core", digits=1),
    Column("cpu_us_per_probe", "CPU us/probe", digits=1),
    Column("rss_mb", "RSS MB", digits=1),
    Column("rss_end_mb", "RSS at end MB", digits=1),
    Column("load", "load (1 min)"),
)
SPREAD_COLUMNS = (
    Column("after_start_s", "s after start"),
    Column("probes_per_s", "probes/s"),
    Column("busiest_100ms_pct", "busiest 100 ms %", digits=1),
    Column("busiest_slot_pct", "busiest 20 ms %", digits=1),
    Column("empty_slots", "empty 20 ms of 50"),
    *(Column(f"tenth_{i}", f"{i}00 ms", digits=1) for i in range(10)),
    Column("load", "load (1 min)"),
)
KILL_COLUMNS = (
    Column("victim_switch_s", "switch s", digits=3),
    Column("victim_failed", "victim failed"),
    Column("victim_longest_s", "victim longest s", digits=3),
    Column("victim_flaps", "flaps"),
    Column("others_failed", "others failed"),
    Column("others_wrong_backend", "others wrong backend"),
    Column("others_unanswered_hosts", "others unanswered"),
    Column("calm_p99_ms", "others p99 ms, no fault", digits=2),
    Column("others_p99_ms", "others p99 ms, fault", digits=2),
    Column("others_req_s", "req/s, fault", digits=0),
    Column("load", "load (1 min)"),
)
ADD_COLUMNS = (
    Column("add_first_200_s", "PUT to first 200 s", digits=3),
    Column("add_put_answered_s", "PUT answered s", digits=3),
    Column("others_failed", "others failed"),
    Column("others_wrong_backend", "others wrong backend"),
    Column("others_p99_ms", "others p99 ms", digits=2),
    Column("load", "load (1 min)"),
)
ROUTING_COLUMNS = (
    Column("req_s", "req/s", "higher"),
    Column("p50_ms", "p50 ms", digits=3),
    Column("p99_ms", "p99 ms", digits=3),
    Column("failed", "failed"),
    Column("cpu_us_per_req", "CPU us/req", digits=1),
    Column("net_cpu_us_per_req", "CPU us/req net of checks", digits=1),
    Column("idle_cpu_pct", "idle CPU %", digits=1),
    Column("startup_s", "start-up s", digits=2),
    Column("startup_cpu_s", "its CPU s", digits=2),
    Column("switched", "switched"),
    Column("load", "load (1 min)"),
)


def bars(args: argparse.Namespace) -> tuple[Bar, ...]:
    add_bar = args.interval * (1 + RISE)
    return (
        Bar("idle CPU at most 10 % of one core", "idle_cpu_pct", "<=", 10.0),
        Bar("RSS at most 250 MB", "rss_mb", "<=", 250.0),
        Bar("start-up to all healthy within 5 s", "startup_s", "<=", 5.0),
        Bar("no workspace switched at start-up", "switched_at_start", "<=", 0),
        Bar("none of the others switched during the load phases", "switched_others", "<=", 0),
        Bar("no workspace switched in the routing runs", "routing_switched", "<=", 0),
        Bar("checks spread: busiest 100 ms under 20 % (even: 10 %)", "busiest_100ms_pct", "<", 20),
        Bar("... and still after the load phases", "late_busiest_100ms_pct", "<", 20),
        Bar("loud death: the victim switches under 0.1 s", "loud_victim_switch_s", "<", 0.1),
        Bar("silent death: the victim switches under 1.5 s", "silent_victim_switch_s", "<", 1.5),
        Bar("loud death: the others see no failed request", "loud_others_failed", "<=", 0),
        Bar("silent death: the others see no failed request", "silent_others_failed", "<=", 0),
        Bar("no answer from another workspace's backend", "wrong_backend", "<=", 0),
        Bar("others' p99 during a loud kill at most 1.25x without", "loud_p99_ratio", "<=", 1.25),
        Bar(
            "others' p99 during a silent kill at most 1.25x without", "silent_p99_ratio", "<=", 1.25
        ),
        Bar("req/s with N workspaces at least 0.95x one's", "routing_ratio", ">=", 0.95),
        Bar("routing by Host at most 2 us of CPU per request (net)", "routing_us", "<=", 2.0),
        Bar(
            f"added workspace serves within interval x (1 + rise) = {add_bar:g} s",
            "add_first_200_s",
            "<=",
            add_bar,
        ),
    )


def summary_row(
    result: dict[str, Any], kills: dict[str, Row], adds: Row, routing: dict[str, Row], n: int
) -> Row:
    """The numbers the bars judge: medians of the switch times and p99 ratios (as
    bench/failover.py), the worst run of every failure count."""
    row: Row = dict(result["scale"])
    worst_kills = {death: worst(rows) for death, rows in result["kills"].items()}
    for death, kill in kills.items():
        row[f"{death}_victim_switch_s"] = kill.get("victim_switch_s")
        row[f"{death}_p99_ratio"] = kill.get("p99_ratio")
        row[f"{death}_others_failed"] = worst_kills[death].get("others_failed")
    wrong = [kill.get("others_wrong_backend") for kill in worst_kills.values()]
    wrong.append(adds.get("others_wrong_backend"))
    row["wrong_backend"] = sum(v for v in wrong if isinstance(v, float))
    row["add_first_200_s"] = adds.get("add_first_200_s")
    one, many = routing.get(routing_label(1), {}), routing.get(routing_label(n), {})
    if isinstance(one.get("req_s"), float) and isinstance(many.get("req_s"), float):
        row["routing_ratio"] = many["req_s"] / one["req_s"]  # type: ignore[operator]
    one_us, many_us = one.get("cpu_us_per_req"), many.get("net_cpu_us_per_req")
    if isinstance(one_us, float) and isinstance(many_us, float):
        row["routing_us"] = many_us - one_us
    # The same difference in two steps: a Host that changes on the connection (one workspace,
    # N spellings of its name), then N workspaces behind those Hosts.
    spelled = routing.get(routing_shapes(n)[1].label, {}).get("net_cpu_us_per_req")
    if isinstance(one_us, float) and isinstance(many_us, float) and isinstance(spelled, float):
        row["host_change_us"] = spelled - one_us
        row["many_workspaces_us"] = many_us - spelled
    return row


def worst(rows: list[Row]) -> Row:
    return median_rows([{"r": r} for r in rows], combine=max)["r"] if rows else {}


def median(rows: list[Row]) -> Row:
    return median_rows([{"r": r} for r in rows])["r"] if rows else {}


def print_report(result: dict[str, Any], routing_runs: list[dict[str, Row]], n: int) -> Row:
    args_n = f"{n:,} workspaces"
    print(f"\nScale: {args_n}, health checks every {result['interval']:g} s, one proxy:\n")
    print(render_table({"dumont": result["scale"]}, SCALE_COLUMNS, (), first="proxy"))
    print("\nWhen the probes reached the backends (time modulo 1 s): % of them in the busiest")
    print("100 ms and 20 ms, and in each 100 ms of the second (an even spread: 10 % each):\n")
    print(render_table(result["spreads"], SPREAD_COLUMNS, (), first="window"))
    kills = {death: median(rows) for death, rows in result["kills"].items()}
    print(f"\nOne workspace's primary killed under wrk load over the {n - 1:,} others "
          f"(medians of {len(result['kills']['loud'])}):\n")  # fmt: skip
    print(render_table(kills, KILL_COLUMNS, (), first="death"))
    print("\nWorst run per cell:\n")
    worst_kills = {death: worst(rows) for death, rows in result["kills"].items()}
    print(render_table(worst_kills, KILL_COLUMNS, (), first="death"))
    adds = {f"run {i + 1}": row for i, row in enumerate(result["adds"])}
    print("\nA workspace added with PUT /admin/workspaces/NAME under the same load:\n")
    print(render_table(adds, ADD_COLUMNS, (), first="run"))
    routing = median_rows(routing_runs)
    print(f"\nRouting by Host: one workspace against {args_n}, fresh proxies, alternating, "
          f"medians of {len(routing_runs)}; (ratio) to the best:\n")  # fmt: skip
    print(render_table(routing, ROUTING_COLUMNS, list(routing)))
    summary = summary_row(result, kills, worst(result["adds"]), routing, n)
    switches = [
        v for run in routing_runs for r in run.values() if isinstance(v := r.get("switched"), float)
    ]
    summary["routing_switched"] = max(switches, default=None)
    if "host_change_us" in summary:
        print(
            f"\nCPU per request over one workspace and one Host: "
            f"{summary['routing_us']:+.1f} us with {n:,} workspaces (net of checks), of which "
            f"{summary['host_change_us']:+.1f} us a Host changing on each request of a connection "
            f"and {summary['many_workspaces_us']:+.1f} us the {n:,} workspaces behind the Hosts."
        )
    return summary


# ----------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short phases (the smoke test)")
    parser.add_argument("--workspaces", type=int, default=1000, help="N (1000)")
    parser.add_argument("--runs", type=int, help="runs of each load phase (3; quick: 1)")
    parser.add_argument("--interval", type=float, default=1.0, help="health interval (1 s)")
    parser.add_argument("--idle", type=float, help="seconds of idle CPU measured (20; quick: 3)")
    parser.add_argument("--skip-routing", action="store_true", help="no routing runs")
    parser.add_argument("--profile", action="store_true", help="py-spy the idle proxy")
    parser.add_argument("--json", type=Path, help="write every run and the summary here")
    args = parser.parse_args()
    if args.workspaces < 2:
        parser.error("--workspaces: at least 2 (the victim and one other)")
    args.runs = args.runs or (1 if args.quick else 3)
    args.idle = args.idle or (3.0 if args.quick else 20.0)
    args.duration = 4.0 if args.quick else 10.0  # each wrk run
    args.wrk_warmup = 1.0 if args.quick else 2.0
    args.routing_idle = 1.0 if args.quick else 5.0
    args.settle = 0.5 if args.quick else 2.0
    args.warmup = 1.0 if args.quick else 2.5  # wrk runs this long before the fault
    args.jitter = 0.5 if args.quick else 1.0
    args.observe = 0.5 if args.quick else 1.0
    args.cap = 2.5 if args.quick else 6.0
    args.startup_cap = 60.0
    args.late_window = 3.0 if args.quick else 10.0
    args.sample = 0.2 if args.quick else 1.0
    return args


def main() -> int:
    args = parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (scripts/install-debian-deps.sh)", file=sys.stderr)
            return 2
    # Two descriptors per backend in nginx and in the proxy (a probe and a pooled connection),
    # plus nginx's listening sockets; the children inherit the limit.
    nofile = raise_nofile_limit(12 * args.workspaces + 4096)
    if nofile < 8 * args.workspaces + 1024:
        print(f"RLIMIT_NOFILE is {nofile}: too low for {args.workspaces} workspaces")
        return 2
    machine = machine_info(args.sample)
    print(f"machine: {machine['cpus']} x {machine['cpu']}, load {machine['at_start']['loadavg']}")
    with tempfile.TemporaryDirectory(prefix="dumont-workspaces-") as tmp:
        args.workdir = Path(tmp)
        with bed(args.workdir, args.workspaces) as the_bed:
            result = scale_phase(the_bed, args)
            result["interval"] = args.interval
            routing_runs = [] if args.skip_routing else routing_phase(the_bed, args)
    summary = print_report(result, routing_runs, args.workspaces)
    results = check_bars(summary, {}, bars(args))
    print("\nBars for our proxy:\n" + render_bars(results))
    if result["profile"]:
        print("\n" + result["profile"])
    machine["at_end"] = machine_load(args.sample)
    print("\n" + load_summary(machine))
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "workdir")}
        write_json(args.json, {
            "benchmark": "workspaces", "machine": machine, "settings": settings,
            "scale": result["scale"], "spreads": result["spreads"], "kills": result["kills"],
            "adds": result["adds"],
            "routing_runs": routing_runs, "summary": summary, "bars": results,
            "profile": result["profile"],
        })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
