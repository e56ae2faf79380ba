#!/usr/bin/env python3
"""Far away (issue 19): workbench loads through each proxy over a delayed link, in one run.

Chromium runs in a network namespace whose only way out is a link of ``--rtt-ms`` round trip
(bench/peers/delaylink.py: two TUN devices and a program that holds each packet for half of it;
this kernel has no ``sch_netem``). One real code-server (no auth, a workspace folder holding
``far-away-marker.txt``) listens on the link's near address, and so do, in front of it with TLS 1.3
and a certificate made in the run, HAProxy (HTTP/2 with WebSockets inside it, RFC 8441), nginx and
Caddy (HTTP/2; WebSockets on HTTP/1.1 connections of their own) and our proxy (bench/peers/
tls_front.py). "direct" is code-server itself, plain HTTP/1.1.

Per run and proxy, a fresh Chromium profile (bench/peers/workbench_load.py, inside the namespace)
loads the workbench cold, then reloads it warm in the same tab; a load lasts until the explorer
shows the marker file. The order of the proxies rotates per run. Per proxy, the table shows the
medians over the runs of: each load's seconds, the TCP connections the browser opened to the proxy
during it (SYNs counted on the link), and the protocol the document came over, with how the
WebSockets went (inside HTTP/2, or their own HTTP/1.1 connections). A ratio compares with HAProxy,
which is issue 19's bar: cold and warm loads through our proxy no slower than through HAProxy.

Usage: ``.venv/bin/python bench/far.py [--rtt-ms 100] [--runs 7] [--only dumont,haproxy]
[--json F]`` (root: it makes a network namespace and TUN devices).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from peers.delaylink import DelayLink, delay_link
from peers.procs import BENCH_DIR, ProcessGroup, stopping
from peers.report import (
    Bar,
    Column,
    Row,
    check_bars,
    machine_info,
    machine_load,
    median_rows,
    render_bars,
    render_table,
    write_json,
)
from peers.tls_front import TLS_PROXIES, Certificate, Site, make_certificate, start_front
from peers.upstreams import start_backends

from tests.support.codeserver import QUIET_SETTINGS, find_launcher

NAMES = (*TLS_PROXIES, "direct")
MARKER = "far-away-marker.txt"
COLUMNS = (
    Column("protocol", "protocol to the browser"),
    Column("tls", "TLS"),
    Column("conns_cold", "conns cold"),
    Column("conns_warm", "conns warm"),
    Column("cold_s", "cold s", "lower", 2),
    Column("warm_s", "warm s", "lower", 2),
    Column("cold_range", "cold min-max"),
    Column("warm_range", "warm min-max"),
    Column("warm_cached", "warm cached"),
    Column("runs", "runs"),
)
BARS = (
    Bar("cold workbench load no slower than HAProxy's (s)", "cold_s", "<=", "haproxy"),
    Bar("warm workbench load no slower than HAProxy's (s)", "warm_s", "<=", "haproxy"),
)
_LISTENING = re.compile(r"HTTP server listening on (http://[\d.]+:\d+)/")


def start_code_server(base: Path, address: str) -> tuple[ProcessGroup, str, Path]:
    """code-server on ``address`` (the link's near end: the proxies and the far browser both
    reach it), without auth: the benchmark measures the workbench's load, not a sign-in."""
    dirs = {name: base / name for name in ("user-data", "extensions", "config", "workspace")}
    for path in dirs.values():
        path.mkdir(parents=True)
    (dirs["workspace"] / MARKER).write_text("issue 19: the explorer shows this file\n")
    (dirs["workspace"] / "train.py").write_text("print('hello')\n")
    settings = dirs["user-data"] / "User" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps(QUIET_SETTINGS, indent=2))
    argv = [
        str(find_launcher()), f"--bind-addr={address}:0", "--auth=none",
        f"--config={dirs['config'] / 'config.yaml'}", f"--user-data-dir={dirs['user-data']}",
        f"--extensions-dir={dirs['extensions']}", "--disable-telemetry",
        "--disable-update-check", "--disable-workspace-trust", str(dirs["workspace"]),
    ]  # fmt: skip
    env = {"XDG_CONFIG_HOME": str(dirs["config"]), "XDG_DATA_HOME": str(dirs["user-data"])}
    group = ProcessGroup("code-server", argv, base / "code-server.log", env=env).start()
    deadline = time.monotonic() + 60
    while (match := _LISTENING.search(group.log_tail(200))) is None:
        group.check_alive()
        if time.monotonic() > deadline:
            group.stop()
            raise RuntimeError(f"code-server did not report its address:\n{group.log_tail()}")
        time.sleep(0.05)
    return group, match[1], dirs["workspace"]


def browse(
    link: DelayLink, url: str, tls: Certificate, profile: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """One fresh browser's cold and warm loads of ``url``, from inside the far namespace."""
    target = url.split("//", 1)[1].split("/", 1)[0]
    argv = link.exec_argv([
        sys.executable, "-m", "peers.workbench_load", "--url", url, "--marker", MARKER,
        "--profile", str(profile), "--spki", tls.spki_sha256, "--stats", str(link.stats_path),
        "--target", target, "--settle", str(args.settle),
    ])  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=BENCH_DIR, env={**os.environ, "PYTHONPATH": str(BENCH_DIR)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # Chromium's processes run in sessions of their own: whatever is left, by pid.
        link.kill_far_processes()
        shutil.rmtree(profile, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the browser failed (exit {proc.returncode}):\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _protocol(load: dict[str, Any]) -> str:
    """How the document and the WebSockets came: ``h2, WS inside`` is RFC 8441."""
    protocol = str(load.get("protocol", "?"))
    statuses = set(load.get("websockets", []))
    if not statuses:
        return protocol
    if statuses == {200}:
        return f"{protocol}, WS inside"
    if statuses == {101}:
        return f"{protocol}, WS on http/1.1" if protocol != "http/1.1" else protocol
    return f"{protocol}, WS {sorted(statuses)}"


def to_row(result: dict[str, Any]) -> Row:
    cold, warm = result["cold"], result["warm"]
    return {
        "protocol": _protocol(cold),
        "tls": str(cold.get("tls", "none")),
        "conns_cold": float(cold["connections"]),
        "conns_warm": float(warm["connections"]),
        "cold_s": float(cold["seconds"]),
        "warm_s": float(warm["seconds"]),
        "warm_cached": float(warm["from_cache"]),
    }


def one_run(
    run: int,
    urls: dict[str, str],
    link: DelayLink,
    tls: Certificate,
    args: argparse.Namespace,
    label: str = "",
) -> dict[str, Row]:
    """Every proxy once; the order rotates per run so that none always runs first or last."""
    label = label or f"run {run + 1}/{args.runs}"
    names = list(urls)
    shift = run % len(names)
    rows: dict[str, Row] = {}
    for name in names[shift:] + names[:shift]:
        profile = Path(tempfile.mkdtemp(prefix=f"profile-{name}-", dir=args.workdir))
        try:
            result = browse(link, urls[name], tls, profile, args)
        except Exception as exc:  # one broken proxy must not cost the other rows
            print(f"  {label} {name} failed: {exc!r}", file=sys.stderr, flush=True)
            rows[name] = {"error": repr(exc)}
            continue
        rows[name] = to_row(result)
        rows[name]["raw"] = json.dumps(result)
        print(
            f"{label} {name:8} cold {rows[name]['cold_s']:.2f} s "
            f"warm {rows[name]['warm_s']:.2f} s  conns {rows[name]['conns_cold']:.0f}"
            f"+{rows[name]['conns_warm']:.0f}  {rows[name]['protocol']}",
            file=sys.stderr,
            flush=True,
        )
    return {n: rows[n] for n in names}


def summarize(runs: list[dict[str, Row]]) -> dict[str, Row]:
    """Medians per proxy, over the runs that worked; min-max and the count of those runs."""
    good = [{n: r for n, r in run.items() if "error" not in r} for run in runs]
    medians = median_rows([{n: {k: v for k, v in r.items() if k != "raw"} for n, r in run.items()}
                           for run in good])  # fmt: skip
    for name, row in medians.items():
        for key in ("cold_s", "warm_s"):
            values = [v for run in good if isinstance(v := run.get(name, {}).get(key), float)]
            row[key.replace("_s", "_range")] = f"{min(values):.2f}-{max(values):.2f}"
        row["runs"] = str(sum(1 for run in good if name in run))
    return medians


def paired_ratios(runs: list[dict[str, Row]], name: str, peer: str) -> dict[str, list[float]]:
    """``name``'s load time over ``peer``'s, per round: the two ran within a minute of each
    other, so drift in what else the machine runs cancels out more than across medians."""
    ratios: dict[str, list[float]] = {"cold_s": [], "warm_s": []}
    for run in runs:
        ours, theirs = run.get(name, {}), run.get(peer, {})
        for key, values in ratios.items():
            mine, base = ours.get(key), theirs.get(key)
            if isinstance(mine, float) and isinstance(base, float) and base > 0:
                values.append(mine / base)
    return ratios


def render_paired(ratios: dict[str, list[float]], name: str, peer: str) -> str:
    parts = []
    for key, values in ratios.items():
        if values:
            parts.append(
                f"{key.removesuffix('_s')} median {statistics.median(values):.2f} "
                f"(min {min(values):.2f}, max {max(values):.2f}, "
                f"{sum(v <= 1.0 for v in values)} of {len(values)} rounds no slower)"
            )
    return f"{name} / {peer} per round: " + "; ".join(parts)


def _ms(rtt: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.1f}" for v in rtt)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt-ms", type=float, default=100.0, help="the link's round trip [100]")
    parser.add_argument("--runs", type=int, default=7, help="runs to take medians of [7, min 5]")
    parser.add_argument("--only", help="comma-separated: haproxy,nginx,caddy,dumont,direct")
    parser.add_argument("--json", type=Path, help="write every run and the medians here")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first [1]")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds without a request before warm [2]"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="allow fewer than 5 runs (checks the harness only)"
    )
    args = parser.parse_args()
    if args.runs < 5 and not args.smoke:
        parser.error("issue 19's bar takes medians of at least 5 runs (--smoke to try fewer)")
    names = args.only.split(",") if args.only else list(NAMES)
    unknown = set(names) - set(NAMES)
    if unknown:
        parser.error(f"unknown names {sorted(unknown)}; known: {', '.join(NAMES)}")
    args.names = [n for n in NAMES if n in names]
    return args


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        print("bench/far.py makes a network namespace and TUN devices: run it as root")
        return 2
    load_before = uptime()
    machine = machine_info()
    print(f"machine: {machine['cpus']} x {machine['cpu']}\nbefore: {load_before}", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="dumont-far-") as tmp,
        delay_link(args.rtt_ms, Path(tmp)) as link,
        stopping([]) as groups,
    ):
        args.workdir = Path(tmp)
        tls = make_certificate(args.workdir, link.near)
        code_server, direct_url, workspace = start_code_server(args.workdir / "cs", link.near)
        groups.append(code_server)
        ((standby, standby_port),) = start_backends(args.workdir, ["standby"])
        groups.append(standby)
        base = Site(link.near, 0, direct_url.split("//", 1)[1], tls, args.workdir)
        urls: dict[str, str] = {}
        for name in args.names:
            if name == "direct":
                urls[name] = direct_url
                continue
            front = start_front(name, base, f"127.0.0.1:{standby_port}")
            groups.append(front.group)
            urls[name] = front.url
        urls = {name: f"{url}/?folder={workspace}" for name, url in urls.items()}
        rtt_before = link.ping()
        print(f"link: {link.rtt_ms:g} ms round trip, ping min/avg/max {_ms(rtt_before)} ms")
        for round_ in range(args.warmup):
            one_run(round_, urls, link, tls, args, label=f"warm-up {round_ + 1} (not measured)")
        runs = [one_run(run, urls, link, tls, args) for run in range(args.runs)]
        rtt_after = link.ping()
    load_after = uptime()
    machine["at_end"] = machine_load()
    medians = summarize(runs)
    print(f"\nMedians of {args.runs} runs, {args.rtt_ms:g} ms round trip; (ratio) to HAProxy's:\n")
    print(render_table(medians, COLUMNS, ("haproxy",)))
    bars: list[dict[str, Any]] = []
    paired: dict[str, list[float]] = {}
    if "dumont" in medians and "haproxy" in medians:
        bars = check_bars(medians["dumont"], medians, BARS)
        print("\nIssue 19's bar for our proxy:\n" + render_bars(bars))
        paired = paired_ratios(runs, "dumont", "haproxy")
        print(render_paired(paired, "dumont", "haproxy"))
    print(f"\nping across the link (ms): before {_ms(rtt_before)}, after {_ms(rtt_after)}")
    print(f"before: {load_before}\nafter:  {load_after}")
    if args.json:
        settings = {k: str(v) for k, v in vars(args).items() if k != "json"}
        settings["ping_ms"] = f"before {_ms(rtt_before)}, after {_ms(rtt_after)}"
        payload = {"benchmark": "far", "machine": machine, "settings": settings}
        results = {"runs": runs, "median": medians, "bars": bars, "paired": paired}
        write_json(args.json, {**payload, **results})
    errors = [row["error"] for run in runs for row in run.values() if "error" in row]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
