"""A delayed link between a browser's network namespace and this one (issue 19's far-away user).

This kernel has no ``sch_netem``, so ``tc qdisc ... netem delay`` fails. Instead, two TUN devices
joined by this program: whatever the kernel routes into one comes out of the other after half the
round trip, in order, never dropped (the queue is a deque; the devices' own queues are lengthened
so that the kernel does not drop while the program sleeps)::

    root namespace (proxies, code-server)              namespace "far" (Chromium)
      10.233.Y.1  dev dmdo<tag> ──► this program ──► dev dmdi<tag>  10.233.Y.2, default route
                               ◄── holds rtt/2 ◄──

The program also counts the TCP SYNs the far side sends, per destination: how many connections the
browser opened to a proxy (``DelayLink.syns()``, asked over a Unix socket, which, unlike an
abstract one, is reachable from any network namespace).

    with delay_link(rtt_ms=100, workdir=tmp) as link:
        link.exec_argv(["ping", "-c", "3", link.near])   # ~100 ms
        link.syns()                                        # {"10.233.Y.1:443": 3}

The namespace, both devices and the program go away when the block ends, however it ends: every
process left in the namespace is killed by pid (``ip netns pids``), the program by its process
group; its TUN devices vanish with its file descriptors; then the namespace is deleted.

``python -m peers.delaylink --rtt-ms 100 --netns NAME --near-dev D --far-dev D --stats SOCK`` is
the program itself; the context manager starts it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import fcntl
import ipaddress
import json
import os
import random
import re
import secrets
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DelayLink", "delay_link", "main"]

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000  # packets without the 4-byte protocol header: raw IP in, raw IP out
_CLONE_NEWNET = 0x40000000
# Room for ~10 MB in each device's queue: a sleeping program must never make the kernel drop.
_TXQUEUELEN = 10_000
_READY = "delaylink ready"


def _open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", name.encode(), _IFF_TUN | _IFF_NO_PI))
    return fd


def _open_tun_in(netns: str, name: str) -> int:
    """A TUN device created inside ``netns``: a device belongs to its creator's namespace.

    Python 3.11 has no os.setns, hence libc's; this process is single-threaded here, and setns
    switches the calling thread only, which it switches back right after.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
        try:
            return _open_tun(name)
        finally:
            if libc.setns(home, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home")
    finally:
        os.close(home)
        os.close(target)


def _syn_destination(packet: bytes) -> str | None:
    """``addr:port`` of an IPv4 TCP SYN without ACK (a connection being opened), else None."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 6:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 14:
        return None
    flags = packet[ihl + 13]
    if flags & 0x12 != 0x02:
        return None
    port = int.from_bytes(packet[ihl + 2 : ihl + 4], "big")
    return f"{ipaddress.IPv4Address(packet[16:20])}:{port}"


class _Direction:
    """Packets read from one device, written to the other ``delay`` seconds later, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, src: int, dst: int, delay: float) -> None:
        self.loop, self.src, self.dst, self.delay = loop, src, dst, delay
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.syns: collections.Counter[str] = collections.Counter()
        self.count_syns = False
        self.write_errors = 0

    def on_readable(self) -> None:
        due = self.loop.time() + self.delay
        for _ in range(256):  # a bound, so that the other direction is served too
            try:
                packet = os.read(self.src, 65536)
            except BlockingIOError:
                break
            if self.count_syns and (dest := _syn_destination(packet)) is not None:
                self.syns[dest] += 1
            self.queue.append((due, packet))
        if self.queue and self.timer is None:
            self.timer = self.loop.call_at(self.queue[0][0], self.flush)

    def flush(self) -> None:
        """Deliver what is due; one timer per direction (equal deadlines in asyncio's timer heap
        would not keep their order)."""
        self.timer = None
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, packet = self.queue.popleft()
            try:
                os.write(self.dst, packet)
            except OSError:  # the device is down (teardown): nothing to deliver to
                self.write_errors += 1
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self.flush)


async def _forward(near: int, far: int, delay: float, stats: Path) -> None:
    loop = asyncio.get_running_loop()
    outbound = _Direction(loop, far, near, delay)  # browser -> proxies: where SYNs are counted
    outbound.count_syns = True
    inbound = _Direction(loop, near, far, delay)
    loop.add_reader(far, outbound.on_readable)
    loop.add_reader(near, inbound.on_readable)

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = {"syns": dict(outbound.syns),
                "write_errors": outbound.write_errors + inbound.write_errors}  # fmt: skip
        writer.write(json.dumps(body).encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(answer, path=str(stats))
    print(_READY, flush=True)
    async with server:
        await asyncio.Future()  # until SIGTERM/SIGKILL


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Two TUN devices joined with a delay.")
    parser.add_argument("--rtt-ms", type=float, required=True)
    parser.add_argument("--netns", required=True, help="the far side's namespace (exists)")
    parser.add_argument("--near-dev", required=True, help="device name in this namespace")
    parser.add_argument("--far-dev", required=True, help="device name in --netns")
    parser.add_argument("--stats", type=Path, required=True, help="Unix socket for SYN counts")
    args = parser.parse_args(argv)
    # The link's jitter is the measurement's: keep it ahead of the browser and servers it carries.
    with contextlib.suppress(PermissionError):
        os.nice(-10)
    near = _open_tun(args.near_dev)
    far = _open_tun_in(args.netns, args.far_dev)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(_forward(near, far, args.rtt_ms / 2000, args.stats))


# ------------------------------------------------------------------------------ the context manager


def _run(argv: Sequence[str], *, check: bool = True) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _free_pair() -> tuple[str, str]:
    """Two addresses of a 10.233.Y.0/30 that no route of this machine mentions."""
    routes = _run(["ip", "-4", "route", "show", "table", "all"])
    for _ in range(100):
        prefix = f"10.233.{random.randint(1, 250)}."
        if prefix not in routes:
            return prefix + "1", prefix + "2"
    raise RuntimeError("no free 10.233.Y.0/30")


@dataclass
class DelayLink:
    """A running link: ``near`` is this namespace's address, ``far`` the browser's."""

    netns: str
    near_dev: str
    far_dev: str
    near: str
    far: str
    rtt_ms: float
    stats_path: Path
    process: subprocess.Popen[bytes] | None = None

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the far namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def syns(self) -> dict[str, int]:
        """TCP connections opened from the far side so far, per ``addr:port``."""
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_path))
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        counts: dict[str, int] = json.loads(data)["syns"]
        return counts

    def ping(self, count: int = 5) -> tuple[float, float, float]:
        """Round trips in ms (min, avg, max) of ``count`` pings from the far side to ``near``."""
        argv = ["ping", "-q", "-c", str(count), "-i", "0.2", "-W", "2", self.near]
        out = _run(self.exec_argv(argv))
        stats = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", out)
        if stats is None or f"{count} received" not in out:
            raise RuntimeError(f"ping across the link lost packets:\n{out}")
        low, avg, high = (float(v) for v in stats.groups())
        return low, avg, high

    def far_pids(self) -> set[int]:
        return {int(p) for p in _run(["ip", "netns", "pids", self.netns], check=False).split()}

    def kill_far_processes(self) -> None:
        """SIGKILL, by pid, every process in the far namespace, until none is left: a browser
        started there puts its processes in sessions of their own, out of its caller's group."""
        deadline = time.monotonic() + 10
        while (pids := self.far_pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def close(self) -> None:
        """Kill what runs in the namespace and the program (by pid), delete the namespace."""
        self.kill_far_processes()
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        _run(["ip", "netns", "del", self.netns], check=False)
        with contextlib.suppress(FileNotFoundError):
            self.stats_path.unlink()


def _start(link: DelayLink, log: Path) -> None:
    bench_dir = Path(__file__).resolve().parents[1]
    argv = [sys.executable, "-m", "peers.delaylink", "--rtt-ms", str(link.rtt_ms),
            "--netns", link.netns, "--near-dev", link.near_dev, "--far-dev", link.far_dev,
            "--stats", str(link.stats_path)]  # fmt: skip
    with log.open("wb") as out:
        link.process = subprocess.Popen(
            argv, cwd=bench_dir, env={**os.environ, "PYTHONPATH": str(bench_dir)},
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 15
    while _READY not in log.read_text(errors="replace"):
        if link.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"delaylink did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.02)


def _configure(link: DelayLink) -> None:
    ns = ["ip", "-n", link.netns]
    _run(["ip", "link", "set", link.near_dev, "txqueuelen", str(_TXQUEUELEN), "up"])
    _run(["ip", "addr", "add", link.near, "peer", link.far, "dev", link.near_dev])
    _run([*ns, "link", "set", "lo", "up"])
    _run([*ns, "link", "set", link.far_dev, "txqueuelen", str(_TXQUEUELEN), "up"])
    _run([*ns, "addr", "add", link.far, "peer", link.near, "dev", link.far_dev])
    _run([*ns, "route", "add", "default", "dev", link.far_dev])


@contextlib.contextmanager
def delay_link(rtt_ms: float, workdir: Path) -> Iterator[DelayLink]:
    """A namespace whose only way out is a link of ``rtt_ms`` round trip to this namespace."""
    tag = secrets.token_hex(3)
    near, far = _free_pair()
    link = DelayLink(
        netns=f"dmdelay{tag}", near_dev=f"dmdo{tag}", far_dev=f"dmdi{tag}", near=near, far=far,
        rtt_ms=rtt_ms, stats_path=workdir / f"delaylink-{tag}.sock",
    )  # fmt: skip
    try:
        _run(["ip", "netns", "add", link.netns])
        _start(link, workdir / f"delaylink-{tag}.log")
        _configure(link)
        yield link
    finally:
        link.close()


if __name__ == "__main__":
    main()
