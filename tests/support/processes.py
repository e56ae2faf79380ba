"""Processes that tests and benchmarks start: each the leader of its own session, so its process
group holds it and every child it spawns; signalled and killed by group id, never by name (other
people's runs on this machine use the same programs).

    proxy = start_proxy(url_of(gpu), url_of(cpu))  # the real CLI, ready once its healthz answers
    proxy.signal_group(signal.SIGSTOP)             # a silent death
    proxy.stop()                                   # SIGCONT + SIGKILL to the group, then reap
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port

__all__ = [
    "REPO",
    "Proc",
    "kill_group",
    "kill_group_async",
    "signal_group",
    "start_process",
    "start_proxy",
    "start_proxy_async",
    "start_upstream",
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def kill_group(popen: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 10) -> None:
    """SIGKILL the group `popen` leads (start_new_session=True) and reap its leader. SIGKILL ends
    stopped processes too; safe to call after the group is gone."""
    signal_group(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=timeout)


async def kill_group_async(process: asyncio.subprocess.Process) -> None:
    """kill_group() for a process started by asyncio.create_subprocess_exec."""
    if process.returncode is None:
        signal_group(process.pid, signal.SIGKILL)
        await process.wait()


@dataclass
class Proc:
    popen: subprocess.Popen[str]
    port: int
    control_port: int = 0  # start_proxy's control listener; 0 for other processes

    @property
    def pgid(self) -> int:
        return self.popen.pid  # start_new_session: the leader's pid is the group id

    def signal_group(self, sig: signal.Signals) -> None:
        signal_group(self.pgid, sig)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.signal_group(signal.SIGCONT)  # a frozen group cannot die of SIGTERM
            self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        if self.popen.stdout:
            self.popen.stdout.close()


def start_process(
    argv: list[str],
    ready_prefix: str = "PORT ",
    timeout: float = 20.0,
    env: dict[str, str] | None = None,
) -> Proc:
    popen = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        start_new_session=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + timeout
    assert popen.stdout is not None
    while time.monotonic() < deadline:
        line = popen.stdout.readline()
        if not line:
            break
        if line.startswith(ready_prefix):
            return Proc(popen, int(line.split()[-1]))
    proc = Proc(popen, 0)
    proc.stop()
    raise RuntimeError(f"{argv} did not report ready within {timeout}s")


def start_upstream(name: str) -> Proc:
    """tests/support/upstream_app.py as a process: a backend a test can SIGKILL or SIGSTOP."""
    return start_process([sys.executable, str(HERE / "upstream_app.py"), name])


def start_proxy(primary: str, standby: str, *extra: str, env: dict[str, str] | None = None) -> Proc:
    """The real CLI in its own process group; ready once /__dumont/healthz answers."""
    port, control = free_port(), free_port()
    argv = [
        sys.executable,
        "-m",
        "proxy",
        "--primary",
        primary,
        "--standby",
        standby,
        "--listen",
        f"127.0.0.1:{port}",
        "--control-listen",
        f"127.0.0.1:{control}",
        *extra,
    ]
    popen = subprocess.Popen(
        argv,
        cwd=REPO,
        start_new_session=True,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    proc = Proc(popen, port, control)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            out = popen.stdout.read() if popen.stdout else ""
            raise RuntimeError(f"proxy exited {popen.returncode}: {out}")
        health = f"http://127.0.0.1:{port}/__dumont/healthz"
        with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=1):
            return proc
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError("proxy did not start")


async def start_proxy_async(
    primary: str, standby: str, control_port: int, *flags: str, log: Path,
    env: Mapping[str, str] | None = None,
) -> asyncio.subprocess.Process:  # fmt: skip
    """The real CLI in its own process group, listening on a free port and on `control_port`;
    stderr to `log`, stdout discarded. Returns at once: the caller waits for what it needs and
    stops it with kill_group_async()."""
    with log.open("w") as stderr:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", f"--primary={primary}", f"--standby={standby}",
            f"--listen=127.0.0.1:{free_port()}", f"--control-listen=127.0.0.1:{control_port}",
            *flags,
            cwd=REPO, env={**os.environ, **(env or {})}, start_new_session=True,
            stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
