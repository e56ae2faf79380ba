"""The proxies under test: nginx, HAProxy and Caddy configured as an operator would, and ours.

Two modes. ``pool``: one upstream behind a keep-alive connection pool (throughput). ``failover``:
a primary with a standby used only when the primary is down (failover). Our proxy always gets
both upstreams, since it needs a standby; in ``pool`` mode all traffic goes to the primary.

``clients``: when a benchmark holds many client connections (issue 13's idle phase), each proxy's
connection caps are raised above that count (nginx's worker_connections, HAProxy's maxconn, our
``--limits-max-connections*``); without it every config is exactly the everyday one. The file
descriptors come from the bench's own RLIMIT_NOFILE, which the proxies inherit.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from peers.procs import BENCH_DIR, REPO_DIR, ProcessGroup, wait_http
from peers.upstreams import nginx_paths, nginx_temp_paths
from proxy.compiled import PURE_ENV
from tests.support.ports import free_port

__all__ = [
    "FAILOVER_PROXIES",
    "POOL_PROXIES",
    "Mode",
    "RunningProxy",
    "Upstreams",
    "render_config",
    "start_proxy",
]

Mode = Literal["pool", "failover"]
# aiohttp-plain: bench/peers/servers.py's minimal aiohttp proxy, what aiohttp alone costs.
# dumont-sources: our proxy on its sources rather than the mypyc build `make` compiles
# (proxy/compiled.py), what the compile buys.
POOL_PROXIES = ("nginx", "haproxy", "caddy", "aiohttp-plain", "dumont-sources", "dumont")
# Ours, and the environment each variant runs with.
OURS: dict[str, dict[str, str]] = {"dumont": {}, "dumont-sources": {PURE_ENV: "1"}}
FAILOVER_PROXIES = ("nginx", "haproxy-defaults", "haproxy-tuned", "caddy", "dumont")


@dataclass(frozen=True)
class Upstreams:
    """Ports on 127.0.0.1: ``standby`` is only used in ``failover`` mode (and by our proxy)."""

    primary: int
    standby: int


@dataclass
class RunningProxy:
    name: str
    port: int
    group: ProcessGroup
    starts: int = 1

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _headroom(clients: int | None, everyday: int) -> int:
    """A cap for ``clients`` held connections plus the benchmark's own, never below everyday's."""
    return everyday if clients is None else max(everyday, clients + 1024)


def _nginx(mode: Mode, port: int, up: Upstreams, workdir: Path, clients: int | None) -> str:
    if mode == "pool":
        servers = f"server 127.0.0.1:{up.primary};"
        extra = "proxy_read_timeout 1h;  # idle WebSockets\n"
    else:
        servers = (
            f"server 127.0.0.1:{up.primary} max_fails=1 fail_timeout=10s;\n"
            f"        server 127.0.0.1:{up.standby} backup;"
        )
        extra = "proxy_next_upstream error timeout http_502 http_503 http_504;\n"
    # Per worker; without accept_mutex one worker may take most of the connections.
    per_worker = _headroom(clients, 4096)
    rlimit = "" if clients is None else f"worker_rlimit_nofile {2 * per_worker};\n"
    return f"""{nginx_paths(workdir, "nginx")}worker_processes auto;
{rlimit}events {{ worker_connections {per_worker}; }}
http {{
    access_log off;
{nginx_temp_paths(workdir, "nginx")}    keepalive_requests 10000000;
    keepalive_timeout 300s;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream backends {{
        {servers}
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_max_temp_file_size 0;  # stream big bodies, never spool them to disk
            proxy_buffer_size 64k;  # 4k pages by default: +30% on a 256 MiB download here
            proxy_buffers 8 64k;
            {extra}        }}
    }}
}}
"""


def _haproxy(
    mode: Mode, port: int, up: Upstreams, _workdir: Path, clients: int | None, *, tuned: bool
) -> str:
    if mode == "pool":
        servers = f"    server origin 127.0.0.1:{up.primary}\n"
        checks = ""
    else:
        checks = "    option httpchk GET /healthz\n"
        if tuned:
            checks += (
                "    option redispatch\n"
                "    default-server inter 500 fall 2 rise 2 on-marked-down shutdown-sessions\n"
            )
        servers = (
            f"    server gpu 127.0.0.1:{up.primary} check\n"
            f"    server cpu 127.0.0.1:{up.standby} check backup\n"
        )
    # HAProxy asks for two descriptors per maxconn (a client and a server side each) and, by
    # default, refuses to start when the hard limit is lower. Idle clients share a few pooled
    # server connections, so 10,000 of them need ~10,100: let it start on the hard limit there.
    lenient = "" if clients is None else "    no strict-limits\n"
    return f"""global
{lenient}    maxconn {_headroom(clients, 4096)}
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    http-reuse always
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
{checks}{servers}"""


def _caddy(mode: Mode, port: int, up: Upstreams, workdir: Path, _clients: int | None) -> str:
    # Caddy caps no connection count, and Go raises its soft RLIMIT_NOFILE to the hard one.
    if mode == "pool":
        targets = f"127.0.0.1:{up.primary}"
        policy = ""
    else:
        targets = f"127.0.0.1:{up.primary} 127.0.0.1:{up.standby}"
        policy = """        lb_policy first
        lb_try_duration 5s
        lb_try_interval 50ms
        fail_duration 30s
        max_fails 1
        unhealthy_status 5xx
        health_uri /healthz
        health_interval 500ms
        health_timeout 1s
"""
    return f"""{{
    admin off
    auto_https off
    storage file_system {workdir}/caddy-data
}}
http://127.0.0.1:{port} {{
    bind 127.0.0.1
    reverse_proxy {targets} {{
{policy}        transport http {{
            keepalive 5m
            keepalive_idle_conns 128
            keepalive_idle_conns_per_host 64
        }}
    }}
}}
"""


Renderer = Callable[[Mode, int, Upstreams, Path, int | None], str]
_RENDERERS: dict[str, tuple[Renderer, str]] = {
    "nginx": (_nginx, "nginx.conf"),
    "haproxy": (lambda m, p, u, w, c: _haproxy(m, p, u, w, c, tuned=False), "haproxy.cfg"),
    "haproxy-defaults": (
        lambda m, p, u, w, c: _haproxy(m, p, u, w, c, tuned=False),
        "haproxy.cfg",
    ),
    "haproxy-tuned": (lambda m, p, u, w, c: _haproxy(m, p, u, w, c, tuned=True), "haproxy.cfg"),
    "caddy": (_caddy, "Caddyfile"),
}


def render_config(
    name: str, mode: Mode, port: int, up: Upstreams, workdir: Path, clients: int | None = None
) -> str:
    """The config file text a peer runs with (for the docs: ``--show-configs``)."""
    renderer, _ = _RENDERERS[name]
    return renderer(mode, port, up, workdir, clients)


def _peer_argv(name: str, conf: Path, workdir: Path) -> list[str]:
    if name == "nginx":
        return ["nginx", "-c", str(conf), "-p", str(workdir)]
    if name.startswith("haproxy"):
        return ["haproxy", "-db", "-f", str(conf)]
    return ["caddy", "run", "--config", str(conf), "--adapter", "caddyfile"]


def dumont_argv(
    port: int, control_port: int, up: Upstreams, clients: int | None = None
) -> list[str]:
    caps = []
    if clients is not None:
        cap = str(_headroom(clients, 8000))
        caps = ["--limits-max-connections", cap, "--limits-max-connections-per-ip", cap]
    return [
        sys.executable,
        "-m",
        "proxy",
        "--primary",
        f"http://127.0.0.1:{up.primary}",
        "--standby",
        f"http://127.0.0.1:{up.standby}",
        "--listen",
        f"127.0.0.1:{port}",
        "--control-listen",
        f"127.0.0.1:{control_port}",
        "--health-interval",
        "0.5",
        "--fall",
        "2",
        "--rise",
        "2",
        *caps,
    ]


class StartedOnStandby(RuntimeError):
    """Our proxy chose the standby at start (its first check of the standby came back first)."""


def _wait_serving_primary(proxy: RunningProxy, timeout: float = 10.0) -> None:
    """Our proxy starts with no route and takes the first backend found up: wait for the primary."""
    deadline = time.monotonic() + timeout
    active = None
    while time.monotonic() < deadline:
        with urllib.request.urlopen(proxy.url("/__dumont/healthz"), timeout=2.0) as resp:
            active = json.load(resp).get("active")
        if active == "primary":
            return
        if active == "standby":
            raise StartedOnStandby(f"{proxy.name} routes to the standby right after its start")
        time.sleep(0.05)
    raise RuntimeError(f"our proxy routes to {active!r}, not the primary, {timeout} s after start")


def _launch(
    name: str, mode: Mode, up: Upstreams, workdir: Path, clients: int | None
) -> RunningProxy:
    port = free_port()
    tag = f"{name}-{mode}-{port}"
    if name in OURS:
        argv = dumont_argv(port, free_port(), up, clients)
        group = ProcessGroup(tag, argv, workdir / f"{tag}.log", cwd=REPO_DIR, env=OURS[name])
    elif name == "aiohttp-plain":
        argv = [sys.executable, "-m", "peers.servers", "plain-proxy", "--port", str(port),
                "--upstream", f"http://127.0.0.1:{up.primary}"]  # fmt: skip
        env = {"PYTHONPATH": str(BENCH_DIR)}
        group = ProcessGroup(tag, argv, workdir / f"{tag}.log", cwd=BENCH_DIR, env=env)
    else:
        _, filename = _RENDERERS[name]
        peer_dir = workdir / tag
        peer_dir.mkdir()
        conf = peer_dir / filename
        conf.write_text(render_config(name, mode, port, up, peer_dir, clients))
        # Caddy keeps its state under HOME/XDG dirs: keep it in the temp dir too.
        env = {key: str(peer_dir) for key in ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME")}
        argv = _peer_argv(name, conf, peer_dir)
        group = ProcessGroup(tag, argv, workdir / f"{tag}.log", cwd=peer_dir, env=env)
    group.start()
    proxy = RunningProxy(name, port, group)
    try:
        if name in OURS:
            wait_http(proxy.url("/__dumont/healthz"), timeout=20.0, watch=group.check_alive)
            _wait_serving_primary(proxy)
        # A request through the proxy that reaches an upstream.
        wait_http(proxy.url("/healthz"), timeout=20.0, watch=group.check_alive)
    except StartedOnStandby:
        group.stop()
        raise
    except BaseException:
        print(f"{tag} did not come up; log tail:\n{group.log_tail()}", file=sys.stderr)
        group.stop()
        raise
    return proxy


def start_proxy(
    name: str, mode: Mode, up: Upstreams, workdir: Path, clients: int | None = None
) -> RunningProxy:
    """Start ``name`` on an ephemeral port; return once a request through it succeeds.

    ``clients``: connections the caller will hold at once (see the module docstring).

    Our proxy is started again (up to 5 times) when it picked the standby at start, a race
    between its first two health checks: the benchmarks measure a proxy serving its primary.
    """
    for attempt in range(1, 6):
        try:
            proxy = _launch(name, mode, up, workdir, clients)
        except StartedOnStandby as exc:
            print(f"  {exc}; starting it again", file=sys.stderr)
            continue
        proxy.starts = attempt
        return proxy
    raise RuntimeError(f"{name} picked the standby at each of 5 starts")
