"""Processes that tests start: each in its own process group, killed by group id, never by name."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


@dataclass
class Proc:
    popen: subprocess.Popen[str]
    port: int

    @property
    def pgid(self) -> int:
        return self.popen.pid  # start_new_session: the leader's pid is the group id

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, sig)

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
    return start_process([sys.executable, str(HERE / "upstream_app.py"), name])


def free_port() -> int:
    """A port that was free a moment ago (the kernel picks it); good enough on loopback."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_proxy(primary: str, standby: str, *extra: str, env: dict[str, str] | None = None) -> Proc:
    """The real CLI in its own process group; ready once /__dumont/healthz answers."""
    import urllib.request

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
    proc = Proc(popen, port)
    proc.control_port = control  # type: ignore[attr-defined]
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
