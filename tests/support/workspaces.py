"""The real CLI proxy serving many workspaces (issue 15), for the end-to-end tests: a TOML file
with ``[workspaces.NAME]`` tables, the proxy started on it in its own process group, a control-API
client with the bearer token, and a load loop that counts every failed request by Host.

    config = write_config(tmp_path / "proxy.toml", {"alice": Workspace(["alice.test"], gpu, cpu)})
    with running_proxy(config, tmp_path / "proxy.log") as proxy:
        proxy.get("/work", host="alice.test")     # (status, headers, body) through the proxy
        await proxy.admin("GET", "/admin/workspaces")

Everything the proxy writes goes to a log file, never to a pipe: a proxy that logs more than a
pipe holds (64 KiB) while nobody reads it would block on its next line and look hung.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from proxy.tasks import TaskSet
from tests.support.ports import free_port
from tests.support.processes import REPO, signal_group
from tests.support.waiting import until, wait_until

__all__ = [
    "TOKEN",
    "LoadLoop",
    "Workspace",
    "WorkspaceProxy",
    "loads",
    "running_proxy",
    "start_workspace_proxy",
    "toml_text",
    "wait_serving",
    "write_config",
]

TOKEN = "workspaces-e2e-token"


@dataclass
class Workspace:
    """One ``[workspaces.NAME]`` table."""

    hosts: Sequence[str]
    primary: str
    standby: str
    overrides: Mapping[str, Any] = field(default_factory=dict)  # health = {...}, hooks = {...}

    def table(self) -> dict[str, Any]:
        return {
            "hosts": list(self.hosts),
            "primary": self.primary,
            "standby": self.standby,
            **self.overrides,
        }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string for what tests write
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def toml_text(top: Mapping[str, Any], tables: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML for top-level keys and dotted tables ("workspaces.alice" -> {...}); a mapping value
    at the top is a table, and inside a table its own sub-table."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items() if not isinstance(v, Mapping)]
    top_tables = {k: v for k, v in top.items() if isinstance(v, Mapping)}
    for name, table in {**top_tables, **tables}.items():
        subtables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if k not in subtables]
        for sub, values in subtables.items():
            lines.append(f"[{name}.{sub}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def write_config(
    path: Path, workspaces: Mapping[str, Workspace], **top: Any
) -> Path:  # fmt: skip
    """A proxy TOML file: the top-level settings and one table per workspace."""
    tables = {f"workspaces.{name}": ws.table() for name, ws in workspaces.items()}
    path.write_text(toml_text(top, tables))
    return path


@dataclass
class WorkspaceProxy:
    """The real CLI proxy, started on a TOML file; its output goes to ``log``."""

    popen: subprocess.Popen[bytes]
    port: int
    control_port: int
    log: Path

    @property
    def pgid(self) -> int:
        return self.popen.pid  # start_new_session: the leader's pid is the group id

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGKILL the group and reap the leader; safe after it exited."""
        if self.popen.poll() is None:
            signal_group(self.pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def terminate(self, timeout: float = 15) -> int:
        """A clean stop (SIGTERM, as systemd sends), waited for; the exit status."""
        signal_group(self.pgid, signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise

    def get(
        self, path: str, *, host: str | None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One request over a fresh connection, Host exactly as given (None: no Host header at
        all, which http.client only allows with skip_host)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
            if host is not None:
                conn.putheader("Host", host)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            conn.endheaders()
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def backend_of(self, host: str, path: str = "/work") -> str:
        """Which test backend answered a request for ``host`` (upstream_app names itself)."""
        status, _, body = self.get(path, host=host)
        assert status == 200, f"{host}{path}: HTTP {status} {body[:200]!r}"
        return str(json.loads(body)["backend"])

    async def admin(
        self, method: str, path: str, body: Any = None, *, token: str = TOKEN
    ) -> tuple[int, Any]:
        """A control-API call with the bearer token; (status, parsed JSON body)."""
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session,
            session.request(
                method, self.control_url + path, json=body, headers=headers
            ) as response,
        ):
            return response.status, await response.json(content_type=None)

    async def workspaces(self) -> dict[str, dict[str, Any]]:
        """GET /admin/workspaces, by name."""
        status, body = await self.admin("GET", "/admin/workspaces")
        assert status == 200, body
        return {ws["name"]: ws for ws in body["workspaces"]}

    async def metrics(self) -> str:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session,
            session.get(self.control_url + "/metrics") as response,
        ):
            assert response.status == 200
            return await response.text()


def start_workspace_proxy(
    config: Path, log: Path, *flags: str, env: Mapping[str, str] | None = None
) -> WorkspaceProxy:
    """``dumont-proxy --config config`` on free loopback ports with the admin token, in its own
    session; returns once /__dumont/healthz answers (not once the backends are healthy: see
    wait_serving)."""
    port, control = free_port(), free_port()
    argv = [
        sys.executable, "-m", "proxy", "--config", str(config),
        "--listen", f"127.0.0.1:{port}", "--control-listen", f"127.0.0.1:{control}",
        "--admin-token", TOKEN, "--shutdown-timeout", "2", *flags,
    ]  # fmt: skip
    with log.open("ab") as out:
        popen = subprocess.Popen(
            argv, cwd=REPO, start_new_session=True, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
    proxy = WorkspaceProxy(popen, port, control, log)
    try:
        wait_until(lambda: _answers(proxy), "the proxy's /__dumont/healthz", timeout=20)
    except BaseException:
        proxy.stop()
        raise
    return proxy


def _answers(proxy: WorkspaceProxy) -> bool:
    if proxy.popen.poll() is not None:
        raise RuntimeError(f"proxy exited {proxy.popen.returncode}:\n{proxy.log_text()}")
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=1)
    try:
        conn.request("GET", "/__dumont/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def running_proxy(
    config: Path, log: Path, *flags: str, env: Mapping[str, str] | None = None
) -> Iterator[WorkspaceProxy]:
    """start_workspace_proxy() for a `with` block: the group is killed on the way out."""
    proxy = start_workspace_proxy(config, log, *flags, env=env)
    try:
        yield proxy
    finally:
        proxy.stop()


async def wait_serving(
    proxy: WorkspaceProxy, names: Sequence[str], role: str = "primary", timeout: float = 15
) -> None:
    """Until each named workspace serves from ``role`` with both backends' health known."""

    async def ready() -> bool:
        found = await proxy.workspaces()
        return all(
            name in found
            and found[name]["state"] == f"serving_{role}"
            and None not in found[name]["healthy"].values()
            for name in names
        )

    await until(ready, f"{', '.join(names)} serving from the {role}", timeout=timeout)


@dataclass
class LoadLoop:
    """GETs over keep-alive to each Host in turn, every ``pause`` seconds, until stopped: what
    the workspaces' users do while one of them switches. Each answer is kept with its time; every
    answer that is not a 2xx (from the expected backend, where one is named) and every transport
    error is a failure with its time."""

    url: str
    expect: Mapping[str, str | None]  # Host -> the backend that must answer it (None: any)
    pause: float = 0.01
    answers: list[tuple[float, str, str]] = field(default_factory=list)  # (time, Host, backend)
    failures: list[tuple[float, str, str]] = field(default_factory=list)  # (time, Host, what)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stop.is_set():
                for host, backend in self.expect.items():
                    await self._one(session, host, backend)
                await asyncio.sleep(self.pause)

    async def _one(self, session: aiohttp.ClientSession, host: str, backend: str | None) -> None:
        try:
            async with session.get(self.url + "/work", headers={"Host": host}) as r:
                body = await r.read()
                if r.status // 100 != 2:
                    self._fail(host, f"HTTP {r.status} {body[:120]!r}")
                    return
                got = str(json.loads(body)["backend"])
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._fail(host, repr(exc))
            return
        if backend is not None and got != backend:
            self._fail(host, f"answered by {got}, not {backend}")
        else:
            self.answers.append((time.monotonic(), host, got))

    def _fail(self, host: str, what: str) -> None:
        self.failures.append((time.monotonic(), host, what))

    def count(self, host: str | None = None) -> int:
        return sum(1 for _, h, _ in self.answers if host is None or h == host)

    def first_from(self, host: str, backend: str, after: float) -> float | None:
        """When ``backend`` first answered ``host`` at or after ``after``."""
        return next(
            (t for t, h, b in self.answers if (h, b) == (host, backend) and t >= after), None
        )

    def stop(self) -> None:
        self._stop.set()


@contextlib.asynccontextmanager
async def loads(*loops: LoadLoop) -> AsyncIterator[None]:
    """Run the loops for the block; stopped and awaited on the way out, even on failure."""
    tasks = TaskSet("load")
    running = [tasks.spawn(loop.run(), name=f"load-{i}") for i, loop in enumerate(loops)]
    try:
        yield
    finally:
        for loop in loops:
            loop.stop()
        await asyncio.wait(running, timeout=20)
        await tasks.close()
