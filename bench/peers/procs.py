"""Processes in their own group: start, wait for a port, measure RSS, kill by group id."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import signal_group

__all__ = [
    "BENCH_DIR",
    "REPO_DIR",
    "ProcessGroup",
    "group_cpu_seconds",
    "group_pids",
    "group_rss_bytes",
    "stopping",
    "wait_http",
    "wait_tcp",
]

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent


def group_pids(pgid: int) -> list[int]:
    """Every live process whose process group is ``pgid`` (read from /proc)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after the last one.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def group_rss_bytes(pgid: int) -> int:
    """RSS summed over the process group (shared pages of forked workers count once per process)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
    return total


def group_cpu_seconds(pgid: int) -> float:
    """User plus system CPU time used so far by the live processes of the group."""
    hz = os.sysconf("SC_CLK_TCK")
    ticks = 0
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / hz


def wait_tcp(port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on 127.0.0.1:{port} after {timeout} s"
                ) from None
            time.sleep(0.05)


def wait_http(
    url: str, timeout: float = 15.0, expect: int = 200, watch: Callable[[], None] | None = None
) -> None:
    """Wait until ``url`` answers with status ``expect``; ``watch`` raises if the server died."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if watch is not None:
            watch()
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == expect:
                    return
                last = resp.status
        except urllib.error.HTTPError as exc:
            last = exc.code
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer {expect} within {timeout} s (last: {last})")


@dataclass
class ProcessGroup:
    """One command started as the leader of a new session, so its group is its pid."""

    name: str
    argv: Sequence[str]
    log_path: Path
    cwd: Path | None = None
    env: Mapping[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ProcessGroup:
        full_env = dict(os.environ)
        if self.env:
            full_env.update(self.env)
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                list(self.argv),
                cwd=self.cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pgid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def rss_bytes(self) -> int:
        return group_rss_bytes(self.pgid)

    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.pgid)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the whole group (SIGKILL: loud death, SIGSTOP: silent)."""
        signal_group(self.pgid, signum)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited early; log tail:\n{self.log_tail()}")

    def stop(self, grace: float = 2.0) -> None:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; resume it first if frozen."""
        if self.popen is None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and group_pids(self.pgid):
            self.popen.poll()
            time.sleep(0.02)
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=2.0)


@contextlib.contextmanager
def stopping(groups: list[ProcessGroup]) -> Iterator[list[ProcessGroup]]:
    """Stop every group appended to ``groups`` when the block ends, however it ends."""
    try:
        yield groups
    finally:
        for group in reversed(groups):
            group.stop()
