#!/usr/bin/env python3
"""HTTP/2 benchmark (issue 19): h2load against our proxy and HAProxy, both on TLS, in one run.

Upstream: an nginx origin serving ``/1k`` (1 KiB). Each proxy terminates TLS (a self-signed
P-256 certificate made for the run), speaks HTTP/2 to h2load (ALPN h2) and HTTP/1.1 to the origin
over kept-alive connections. Per proxy and run:

- requests: h2load for ``--seconds`` on ``--connections`` connections with ``--streams``
  concurrent streams each -> req/s, and p50/p99 latency from h2load's per-request log;
- many streams: 100 connections x 100 concurrent streams (10,000 at once), ``--many-requests``
  requests in all, twice -> req/s, failed requests, and RSS of the proxy's process group before,
  at the peak (sampled every 50 ms) and after each round. Neither process hands freed memory back
  to the kernel at once, so the first round sets a plateau; flat memory is the second round
  adding nothing to it.

Each cell is the median over ``--runs`` runs; a ratio in parentheses compares with HAProxy.
Bars (issue 19): req/s at least 0.5x HAProxy's, p99 at most 2x HAProxy's, the 10,000 streams
served without a failure.

Usage: ``.venv/bin/python bench/h2load.py [--quick] [--runs N] [--json FILE]``; needs h2load
(Debian's nghttp2-client), nginx and haproxy.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peers.procs import REPO_DIR, ProcessGroup, stopping, wait_tcp
from peers.proxies import Upstreams, dumont_argv
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
from peers.upstreams import SMALL_PATH, make_docroot, start_nginx_origin

from proxy.dataplane.upstream import MAX_CONNECTIONS
from tests.support.ports import free_port

PROXIES = ("haproxy", "dumont")
COLUMNS = (
    Column("req_s", "req/s", "higher"),
    Column("p50_ms", "p50 ms", "lower", 2),
    Column("p99_ms", "p99 ms", "lower", 2),
    Column("many_req_s", "10k streams req/s", "higher"),
    Column("many_failed", "10k failed", "lower"),
    Column("rss_before_mb", "RSS before MB", "lower", 1),
    Column("rss_peak_mb", "RSS peak MB", "lower", 1),
    Column("rss_after_mb", "RSS after 1st MB", "lower", 1),
    Column("rss_after_2_mb", "RSS after 2nd MB", "lower", 1),
)
BARS = (
    Bar("req/s at least 0.5x HAProxy's", "req_s", ">=", "haproxy", factor=0.5),
    Bar("p99 at most 2x HAProxy's (ms)", "p99_ms", "<=", "haproxy", factor=2.0),
    Bar("10,000 concurrent streams: no failed request", "many_failed", "<=", 0.0),
)


def make_certificate(workdir: Path) -> tuple[Path, Path, Path]:
    """cert, key, and both in one PEM (HAProxy's ``crt`` wants them together)."""
    cert, key, both = workdir / "cert.pem", workdir / "key.pem", workdir / "both.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    both.write_text(cert.read_text() + key.read_text())
    return cert, key, both


def haproxy_config(port: int, origin: int, pem: Path) -> str:
    """HAProxy as an operator would run it for HTTP/2 to browsers: TLS, ALPN h2 then http/1.1,
    kept-alive connections to the origin (its defaults: 100 streams per connection), at most as
    many as our pool opens (without ``maxconn`` it opened one per stream: 10,000 at once, and the
    origin refused thousands)."""
    return f"""global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:{port} ssl crt {pem} alpn h2,http/1.1
    default_backend be
backend be
    server origin 127.0.0.1:{origin} maxconn {MAX_CONNECTIONS}
"""


@dataclass
class Running:
    name: str
    port: int
    group: ProcessGroup


def start(name: str, origin: int, workdir: Path, tls: tuple[Path, Path, Path]) -> Running:
    port = free_port()
    cert, key, both = tls
    if name == "haproxy":
        conf = workdir / f"haproxy-{port}.cfg"
        conf.write_text(haproxy_config(port, origin, both))
        argv = ["haproxy", "-db", "-f", str(conf)]
        group = ProcessGroup(f"haproxy-{port}", argv, workdir / f"haproxy-{port}.log")
    else:
        argv = dumont_argv(port, free_port(), Upstreams(origin, origin), clients=200)
        # One origin as both backends: the standby under another name (they must differ).
        argv[argv.index("--standby") + 1] = f"http://localhost:{origin}"
        argv += ["--tls-cert", str(cert), "--tls-key", str(key), "--log-level", "warning"]
        group = ProcessGroup(f"dumont-{port}", argv, workdir / f"dumont-{port}.log", cwd=REPO_DIR)
    group.start()
    try:
        wait_tcp(port, timeout=20.0)
    except TimeoutError:
        group.stop()
        raise RuntimeError(f"{name} did not listen: {group.log_tail()}") from None
    # A first request through the proxy that reaches the origin (and, for ours, a backend up).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done = h2load(port, ["-n", "1", "-c", "1"])
        if done["succeeded"] == 1:
            return Running(name, port, group)
        time.sleep(0.2)
    group.stop()
    raise RuntimeError(f"{name} did not answer over HTTP/2: {group.log_tail()}")


def h2load(port: int, args: list[str], log: Path | None = None) -> dict[str, Any]:
    argv = ["h2load", *args, f"https://127.0.0.1:{port}{SMALL_PATH}"]
    if log is not None:
        argv[1:1] = ["--log-file", str(log)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    out = done.stdout
    finished = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    counts = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored",
        out,
    )
    if finished is None or counts is None:
        raise RuntimeError(f"h2load said: {out[-800:]}{done.stderr[-400:]}")
    return {
        "req_s": float(finished[3]),
        "succeeded": int(counts[4]),
        "failed": int(counts[5]) + int(counts[6]) + int(counts[1]) - int(counts[3]),
    }


def latencies(log: Path) -> tuple[float, float]:
    """p50 and p99 in ms from h2load's log: one line per request, its duration in microseconds
    last (after its start time and status)."""
    durations = sorted(int(line.split()[-1]) for line in log.read_text().splitlines() if line)
    if not durations:
        return float("nan"), float("nan")

    def pick(q: float) -> float:
        return durations[min(len(durations) - 1, int(q * len(durations)))] / 1000

    return pick(0.50), pick(0.99)


@contextlib.contextmanager
def peak_rss(group: ProcessGroup) -> Iterator[list[int]]:
    """Samples the group's RSS every 50 ms while the block runs; yields [peak bytes]."""
    peak = [group.rss_bytes()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], group.rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def measure(proxy: Running, workdir: Path, opts: argparse.Namespace) -> Row:
    port, group = proxy.port, proxy.group
    mib = 1024 * 1024
    # Warm-up: connections to the origin, the interpreter's caches.
    h2load(port, ["-n", "2000", "-c", "8", "-m", "10"])
    log = workdir / f"h2load-{port}.log"
    rate = h2load(
        port,
        ["-D", str(opts.seconds), "-c", str(opts.connections), "-m", str(opts.streams), "-t", "1"],
        log,
    )
    p50, p99 = latencies(log)
    log.unlink()
    time.sleep(0.5)
    before = group.rss_bytes()
    many_args = ["-n", str(opts.many_requests), "-c", "100", "-m", "100", "-t", "1"]
    with peak_rss(group) as peak:
        many = h2load(port, many_args)
        time.sleep(1.0)  # what the proxy lets go of once the streams are done
        after = group.rss_bytes()
        again = h2load(port, many_args)
        time.sleep(1.0)
        after_2 = group.rss_bytes()
    return {
        "req_s": rate["req_s"],
        "p50_ms": p50,
        "p99_ms": p99,
        "many_req_s": many["req_s"],
        "many_failed": float(many["failed"] + again["failed"]),
        "rss_before_mb": before / mib,
        "rss_peak_mb": peak[0] / mib,
        "rss_after_mb": after / mib,
        "rss_after_2_mb": after_2 / mib,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short run (a smoke test)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--streams", type=int, default=10, help="concurrent streams each")
    parser.add_argument("--many-requests", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args()
    if opts.quick:
        opts.runs, opts.seconds, opts.many_requests = 1, 2, 10_000
    for tool in ("h2load", "haproxy", "nginx", "openssl"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing (scripts/debian-packages.txt)", file=sys.stderr)
            return 2
    machine = machine_info()
    print(f"machine: {machine['cpus']} x {machine['cpu']}, load {machine['at_start']['loadavg']}")
    runs: list[dict[str, Row]] = []
    with tempfile.TemporaryDirectory(prefix="dumont-h2load-") as tmp:
        workdir = Path(tmp)
        tls = make_certificate(workdir)
        origin, origin_port = start_nginx_origin(workdir, make_docroot(workdir, 1))
        with stopping([origin]) as groups:
            for number in range(1, opts.runs + 1):
                run: dict[str, Row] = {}
                for name in PROXIES:
                    proxy = start(name, origin_port, workdir, tls)
                    groups.append(proxy.group)
                    try:
                        run[name] = measure(proxy, workdir, opts)
                    finally:
                        proxy.group.stop()
                        groups.remove(proxy.group)
                    print(f"run {number} {name}: {run[name]}", flush=True)
                runs.append(run)
    rows = median_rows(runs)
    print()
    print(
        f"h2load over TLS, /1k from nginx: {opts.connections} connections x {opts.streams} streams"
        f" for {opts.seconds} s; then 100 x 100 streams, {opts.many_requests:,} requests, twice;"
        f" median of {opts.runs} run(s)"
    )
    print(render_table(rows, COLUMNS, ["haproxy"]))
    bars = check_bars(rows["dumont"], rows, BARS)
    print(render_bars(bars))
    machine["at_end"] = machine_load()
    print(load_summary(machine))
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    if opts.json is not None:
        write_json(opts.json, {"machine": machine, "rows": rows, "bars": bars, "runs": runs})
    return 0 if all(bar["met"] is not False for bar in bars) else 1


if __name__ == "__main__":
    sys.exit(main())
