"""Two machines on one box: a network namespace and a mount namespace per host, joined by a bridge.

Each host gets an address of its own on a private /24 (10.231.X.0/24, X picked free at random), a
veth whose host end can be cut (``link(False)``: a silent partition), and a mount namespace in which
its own disk directory is bind-mounted at the *same* path as on the other host (``view``). That last
part matters: code-server's workbench URL carries ``?folder=<path>`` and VS Code keys its hot-exit
backups by the folder's URI, so after a switch the standby must serve the very same path, as two
real machines with ``/workspace`` each would.

    root namespace: proxy, Chromium, the test, dumont-provision hooks     bridge 10.231.X.1
        ├── veth ── host "gpu" 10.231.X.2: sshd, code-server, lsyncd, checkpoint writer
        └── veth ── host "cpu" 10.231.X.3: sshd, code-server

Processes run in a host through ``nsenter`` with ``start_new_session=True``; a host's death is every
process in its network namespace, listed by the kernel (``ip netns pids``) and signalled by pid,
never by name. ``HostNet.close()`` kills what is left and deletes namespaces, veths, the bridge and
the mounts, and is safe to call after a partial start.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Host", "HostNet", "namespaces_available", "run"]


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> str:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def namespaces_available() -> str | None:
    """None when this process may create network and mount namespaces, else why not."""
    if os.geteuid() != 0:
        return "not root"
    name = f"dmtchk{secrets.token_hex(3)}"
    try:
        run(["ip", "netns", "add", name])
    except (RuntimeError, FileNotFoundError) as exc:
        return str(exc)
    run(["ip", "netns", "del", name], check=False)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    routes = run(["ip", "-4", "route", "show", "table", "all"])
    for _ in range(100):
        net = ipaddress.IPv4Network(f"10.231.{random.randint(100, 250)}.0/24")
        if str(net.network_address)[:-1] not in routes:
            return net
    raise RuntimeError("no free 10.231.X.0/24 subnet")


@dataclass
class Host:
    """One machine: its namespaces, address, disk and the processes started in it."""

    name: str
    netns: str
    mount_ns: Path
    address: str
    veth_host: str  # the end inside the namespace (renamed eth0)
    veth_root: str  # the end on the bridge
    disk: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, argv: Sequence[str]) -> list[str]:
        return [
            "nsenter",
            f"--net=/run/netns/{self.netns}",
            f"--mount={self.mount_ns}",
            "--",
            *argv,
        ]

    def popen(
        self, argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process = subprocess.Popen(
                self.argv(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        self.started.append(process)
        return process

    def run(self, argv: Sequence[str], *, timeout: float = 30.0) -> str:
        return run(self.argv(argv), timeout=timeout)

    def pids(self) -> set[int]:
        out = run(["ip", "netns", "pids", self.netns], check=False)
        return {int(p) for p in out.split()}

    def signal_all(self, sig: signal.Signals) -> int:
        """Signal every process of this host (by pid) until no new one appears; return the count."""
        seen: set[int] = set()
        for _ in range(20):
            fresh = self.pids() - seen
            if not fresh:
                break
            for pid in fresh:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            seen |= fresh
        return len(seen)

    def kill_all(self) -> None:
        """A loud death: SIGKILL (also ends stopped processes), then reap our own children."""
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            self.signal_all(signal.SIGKILL)
            time.sleep(0.05)
        for process in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self.started.clear()

    def link(self, up: bool) -> None:
        """Cut (or restore) the host's only link, from inside the host: nothing gets in or out."""
        state = "up" if up else "down"
        run(["ip", "-n", self.netns, "link", "set", "eth0", state])


class HostNet:
    """The bridge and the hosts on it; ``close()`` removes all of it."""

    def __init__(self, base: Path, names: Sequence[str] = ("gpu", "cpu")) -> None:
        self.base = base
        self.tag = secrets.token_hex(3)
        self.bridge = f"dmb{self.tag}"
        self.ns_dir = base / "ns"
        self.view = base / "view"  # the path every host sees its own disk at
        self.hosts: dict[str, Host] = {}
        self._names = names
        self._ns_dir_mounted = False
        self.subnet = _free_subnet()

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    def open(self) -> HostNet:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        run(["ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])
        self.ns_dir.mkdir(parents=True)
        run(["mount", "--bind", str(self.ns_dir), str(self.ns_dir)])
        self._ns_dir_mounted = True
        run(["mount", "--make-private", str(self.ns_dir)])
        for subdir in ("workspace", "user-data"):
            (self.view / subdir).mkdir(parents=True)
        for index, name in enumerate(self._names):
            self._add_host(name, str(self.subnet.network_address + 2 + index), index)

    def _add_host(self, name: str, address: str, index: int) -> None:
        netns = f"dmt{self.tag}{name}"
        host = Host(
            name=name,
            netns=netns,
            mount_ns=self.ns_dir / f"{name}.mnt",
            address=address,
            veth_host=f"dmv{self.tag}{index}h",
            veth_root=f"dmv{self.tag}{index}r",
            disk=self.base / f"{name}-disk",
        )
        self.hosts[name] = host
        run(["ip", "netns", "add", netns])
        run(["ip", "link", "add", host.veth_root, "type", "veth", "peer", "name", host.veth_host])
        run(["ip", "link", "set", host.veth_root, "master", self.bridge, "up"])
        run(["ip", "link", "set", host.veth_host, "netns", netns])
        run(["ip", "-n", netns, "link", "set", host.veth_host, "name", "eth0"])
        run(["ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0"])
        run(["ip", "-n", netns, "link", "set", "eth0", "up"])
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        run(["ip", "-n", netns, "route", "add", "default", "via", self.gateway])
        for subdir in ("workspace", "user-data", "state", "home"):
            (host.disk / subdir).mkdir(parents=True)
        host.mount_ns.touch()
        binds = " && ".join(
            f"mount --bind {host.disk / d} {self.view / d}" for d in ("workspace", "user-data")
        )
        # No .bashrc of this box's root runs in a host's ssh sessions: tests/support/sshd.py's
        # config sets SHLVL=1 for them (its docstring says why).
        run(["unshare", f"--mount={host.mount_ns}", "--propagation", "private", "sh", "-c", binds])

    def close(self) -> None:
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                host.kill_all()
        for host in self.hosts.values():
            run(["ip", "netns", "del", host.netns], check=False)
            run(["ip", "link", "del", host.veth_root], check=False)
            if host.mount_ns.exists():
                run(["umount", str(host.mount_ns)], check=False)
        if self._ns_dir_mounted:
            run(["umount", str(self.ns_dir)], check=False)
            self._ns_dir_mounted = False
        run(["ip", "link", "del", self.bridge], check=False)
