"""The upstreams behind the proxies: an nginx origin, a WebSocket echo, named backends."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from peers.procs import BENCH_DIR, ProcessGroup, wait_http
from tests.support.ports import free_port

__all__ = [
    "BIG_PATH",
    "SMALL_PATH",
    "make_docroot",
    "nginx_origin_conf",
    "nginx_paths",
    "start_backends",
    "start_nginx_origin",
    "start_ws_echo",
]

SMALL_PATH = "/1k"
BIG_PATH = "/big"


def nginx_paths(workdir: Path, name: str) -> str:
    """The nginx main-context lines that keep every file it writes inside ``workdir``."""
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}daemon off;\nmaster_process on;\n"
        f"pid {workdir}/{name}.pid;\nerror_log {workdir}/{name}-error.log warn;\n"
    )


def nginx_temp_paths(workdir: Path, name: str) -> str:
    """The http-context temp paths, also inside ``workdir``."""
    return "".join(
        f"    {kind}_temp_path {workdir}/{name}-{kind}-temp;\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def make_docroot(workdir: Path, big_mib: int) -> Path:
    """A docroot with a 1 KiB body at /1k and a ``big_mib`` MiB body (random bytes) at /big."""
    root = workdir / "docroot"
    root.mkdir(exist_ok=True)
    (root / SMALL_PATH.lstrip("/")).write_bytes(b"x" * 1023 + b"\n")
    chunk = os.urandom(1 << 20)
    with (root / BIG_PATH.lstrip("/")).open("wb") as big:
        for _ in range(big_mib):
            big.write(chunk)
    return root


def nginx_origin_conf(workdir: Path, port: int, docroot: Path, extra: str = "") -> str:
    return f"""{nginx_paths(workdir, "origin")}worker_processes 1;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{nginx_temp_paths(workdir, "origin")}    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {docroot};
        location = /healthz {{ return 200 "ok\\n"; }}{extra}
    }}
}}
"""


def start_nginx_origin(workdir: Path, docroot: Path, extra: str = "") -> tuple[ProcessGroup, int]:
    """nginx serving ``docroot``; ``extra`` adds locations to its server block."""
    port = free_port()
    conf = workdir / "origin-nginx.conf"
    conf.write_text(nginx_origin_conf(workdir, port, docroot, extra))
    group = ProcessGroup(
        "origin-nginx", ["nginx", "-c", str(conf), "-p", str(workdir)], workdir / "origin.log"
    ).start()
    wait_http(f"http://127.0.0.1:{port}/healthz", watch=group.check_alive)
    return group, port


def _python_servers(
    workdir: Path, specs: list[tuple[str, list[str]]]
) -> list[tuple[ProcessGroup, int]]:
    """Start every server first, then wait for each: Python start-ups overlap."""
    started = []
    for name, args in specs:
        port = free_port()
        group = ProcessGroup(
            name,
            [sys.executable, "-m", "peers.servers", *args, "--port", str(port)],
            workdir / f"{name}.log",
            cwd=BENCH_DIR,
            env={"PYTHONPATH": str(BENCH_DIR)},
        )
        started.append((group.start(), port))
    try:
        for group, port in started:
            wait_http(f"http://127.0.0.1:{port}/healthz", watch=group.check_alive)
    except BaseException:
        for group, _ in started:
            group.stop()
        raise
    return started


def start_ws_echo(workdir: Path) -> tuple[ProcessGroup, int]:
    return _python_servers(workdir, [("ws-echo", ["ws-echo"])])[0]


def start_backends(workdir: Path, names: list[str]) -> list[tuple[ProcessGroup, int]]:
    """Named backends (``/`` answers the name), each the leader of its own process group."""
    return _python_servers(workdir, [(f"backend-{n}", ["backend", "--name", n]) for n in names])
