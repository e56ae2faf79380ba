"""Three proxy replica *processes* agreeing through a real three-member etcd (issue 16), with one
replica in a network namespace of its own so that a test can partition it: for
tests/cluster/test_replicas_bed.py and bench/cluster.py.

    root namespace                                          namespace "dmr<tag>"
      etcd m0 m1 m2, backends "gpu" and "cpu",    veth        replica r2 (last started: a follower)
      replicas r0 and r1 ─ all on GATEWAY (.1) ─────────────── eth0 ADDRESS (.2)

Everything the replicas talk to listens on the root end of the veth (a /24 of 10.232.X.0 picked
free), so the namespaced replica reaches it through its one link and the others through the
local route. ``cut_from_store()`` and ``cut_from()`` add iptables DROP rules *inside* the
namespace (a silent partition: packets vanish, as on a dead link), for the etcd client ports or
one backend's port alone; ``heal()`` removes them. The other replicas are untouched.

    with ReplicaBed(tmp_path) as bed:   # etcd, backends, r0 and r1, a leader, then r2
        await bed.status("r0")            # GET /admin/cluster
        bed.kill_replica("r0")            # SIGKILL of its process group
        bed.kill_backend("gpu")

Cleanup is by process group (each process leads its own session) and by the names this bed
created (its namespace and veth); ``close()`` is safe after a partial start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from proxy.tasks import TaskSet
from tests.support.etcd import EtcdCluster
from tests.support.ports import free_port
from tests.support.processes import REPO, kill_group, signal_group
from tests.support.waiting import wait_until
from tests.support.workspaces import TOKEN, toml_text

__all__ = ["TOKEN", "TTL", "Poller", "ReplicaBed", "RoundAnswers", "polling", "split_windows"]

TTL = 2
PREFIX = "/bed"
HERE = Path(__file__).resolve().parent
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def run(argv: Sequence[str], *, check: bool = True) -> str:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def _free_subnet() -> ipaddress.IPv4Network:
    # 10.232.X: tests/e2e/hosts.py takes 10.231.X, so two beds on one box never collide.
    routes = run(["ip", "-4", "route", "show", "table", "all"])
    for _ in range(100):
        net = ipaddress.IPv4Network(f"10.232.{random.randint(10, 250)}.0/24")
        if str(net.network_address)[:-1] not in routes:
            return net
    raise RuntimeError("no free 10.232.X.0/24 subnet")


@dataclass
class Replica:
    name: str
    address: str  # where its listeners are: the gateway, or the namespace's own address
    port: int
    control_port: int
    config: Path
    log: Path
    netns: str | None
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def control_url(self) -> str:
        return f"http://{self.address}:{self.control_port}"

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        if self.popen is not None:
            kill_group(self.popen)


@dataclass
class Backend:
    name: str
    port: int
    popen: subprocess.Popen[bytes] | None = None


@dataclass
class ReplicaBed:
    base: Path
    hooks: bool = True  # on_failover appends "REPLICA TOKEN" to ``hook_log`` on whoever runs it
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    replicas: dict[str, Replica] = field(default_factory=dict)
    backends: dict[str, Backend] = field(default_factory=dict)
    etcd: EtcdCluster | None = None
    _rules: list[list[str]] = field(default_factory=list)
    _netns_made: bool = False

    def __post_init__(self) -> None:
        self.subnet = _free_subnet()
        self.gateway = str(self.subnet.network_address + 1)
        self.address = str(self.subnet.network_address + 2)
        self.netns = f"dmr{self.tag}"
        self.veth_root = f"dmr{self.tag}r"
        self.hook_log = self.base / "hooks.log"

    # -------------------------------------------------------------------------- building

    def __enter__(self) -> ReplicaBed:
        return self.open()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> ReplicaBed:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        self._make_namespace()
        self.etcd = EtcdCluster.start(self.base, host=self.gateway)
        for name in ("gpu", "cpu"):
            self.backends[name] = Backend(name, free_port())
            self.start_backend(name)
        for index in range(3):
            name = f"r{index}"
            netns = self.netns if index == 2 else None
            address = self.address if netns else self.gateway
            self.replicas[name] = Replica(
                name, address, free_port(), free_port(), self.base / f"{name}.toml",
                self.base / f"{name}.log", netns,
            )  # fmt: skip
            self._write_config(self.replicas[name])
        # r0 and r1 first, and a leader among them before r2 starts: the namespaced replica is
        # a follower, so that cutting it from a backend is one follower's bad view.
        for name in ("r0", "r1"):
            self.start_replica(name)
        wait_until(lambda: self.leader() is not None, "a leader among r0 and r1", timeout=30)
        self.start_replica("r2")
        wait_until(self.all_route, "every replica routing to the gpu", timeout=30)

    def _make_namespace(self) -> None:
        veth_ns = f"dmr{self.tag}n"
        run(["ip", "netns", "add", self.netns])
        self._netns_made = True
        run(["ip", "link", "add", self.veth_root, "type", "veth", "peer", "name", veth_ns])
        run(["ip", "addr", "add", f"{self.gateway}/24", "dev", self.veth_root])
        run(["ip", "link", "set", self.veth_root, "up"])
        run(["ip", "link", "set", veth_ns, "netns", self.netns])
        run(["ip", "-n", self.netns, "link", "set", veth_ns, "name", "eth0"])
        run(["ip", "-n", self.netns, "addr", "add", f"{self.address}/24", "dev", "eth0"])
        run(["ip", "-n", self.netns, "link", "set", "eth0", "up"])
        run(["ip", "-n", self.netns, "link", "set", "lo", "up"])

    def _write_config(self, replica: Replica) -> None:
        assert self.etcd is not None
        top: dict[str, Any] = {
            "primary": f"http://{self.gateway}:{self.backends['gpu'].port}",
            "standby": f"http://{self.gateway}:{self.backends['cpu'].port}",
            "listen": f"{replica.address}:{replica.port}",
            "control_listen": f"{replica.address}:{replica.control_port}",
            "admin_token": TOKEN,
            # A halted replica's 503 comes after switch_wait: one second, not ten.
            "switch_wait": 1.0,
            "shutdown_timeout": 1.0,
            "failback": "manual",  # the bench fails back by command, at a time it picks
            "health": {"interval": 0.5, "fall": 2, "rise": 2},
            "cluster": {
                "endpoints": self.etcd.endpoints,
                "prefix": PREFIX,
                "lease_ttl": TTL,
                "replica_id": replica.name,
                "advertise": replica.control_url,
            },
        }
        if self.hooks:
            top["hooks"] = {
                "on_failover": f'echo "{replica.name} $DUMONT_FENCING_TOKEN" >> {self.hook_log}'
            }
        replica.config.write_text(toml_text(top, {}))

    # ------------------------------------------------------------------------- processes

    def start_backend(self, name: str) -> None:
        """A backend on the gateway at its fixed port (a restarted one comes back there)."""
        backend = self.backends[name]
        argv = [
            sys.executable,
            str(HERE / "upstream_app.py"),
            name,
            self.gateway,
            str(backend.port),
        ]
        with (self.base / f"{name}.log").open("ab") as out:
            backend.popen = subprocess.Popen(
                argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_until(lambda: _answers(f"http://{self.gateway}:{backend.port}/healthz"), name, 20)

    def kill_backend(self, name: str) -> None:
        popen = self.backends[name].popen
        if popen is not None:
            kill_group(popen)

    def pause_backend(self, name: str) -> None:
        """A silent death: the kernel still accepts its connections, nothing answers."""
        popen = self.backends[name].popen
        if popen is not None:
            signal_group(popen.pid, signal.SIGSTOP)

    def start_replica(self, name: str) -> None:
        replica = self.replicas[name]
        argv = [sys.executable, "-m", "proxy", "--config", str(replica.config)]
        if replica.netns is not None:
            # nsenter execs the proxy in place (no fork): the pid is still the group's leader.
            argv = ["nsenter", f"--net=/run/netns/{replica.netns}", "--", *argv]
        with replica.log.open("ab") as out:
            replica.popen = subprocess.Popen(
                argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

        def up() -> bool:
            if not replica.alive():
                raise RuntimeError(f"{name} exited:\n{replica.log.read_text()[-3000:]}")
            return _answers(replica.url + "/__dumont/healthz")

        wait_until(up, f"{name}'s healthz", timeout=30)

    def kill_replica(self, name: str) -> None:
        self.replicas[name].kill()

    def signal_replica(self, name: str, sig: signal.Signals) -> None:
        """SIGSTOP freezes a replica's whole group (a stalled VM, a long GC); SIGCONT thaws it."""
        popen = self.replicas[name].popen
        if popen is not None:
            signal_group(popen.pid, sig)

    # ------------------------------------------------------------------------ partitions

    def _rule(self, action: str, rule: list[str]) -> None:
        run(["ip", "netns", "exec", self.netns, "iptables", action, *rule])

    def _cut(self, ports: Sequence[int]) -> None:
        # Both ways: with OUTPUT alone, a stream the far end already sends on (etcd's watch)
        # keeps arriving, and the "partitioned" replica still learns every decision.
        for port in ports:
            for rule in (
                ["OUTPUT", "-d", self.gateway, "-p", "tcp", "--dport", str(port), "-j", "DROP"],
                ["INPUT", "-s", self.gateway, "-p", "tcp", "--sport", str(port), "-j", "DROP"],
            ):
                self._rule("-A", rule)
                self._rules.append(rule)

    def cut_from_store(self) -> None:
        """r2 no longer reaches any etcd member; its peers' control listeners it still does."""
        assert self.etcd is not None
        self._cut([m.client_port for m in self.etcd.members])

    def cut_from(self, backend: str) -> None:
        """r2 no longer reaches ``backend``; everything else it does."""
        self._cut([self.backends[backend].port])

    def heal(self) -> None:
        while self._rules:
            self._rule("-D", self._rules.pop())

    # --------------------------------------------------------------------------- reading

    def status_sync(self, name: str) -> dict[str, Any] | None:
        replica = self.replicas[name]
        if not replica.alive():
            return None
        request = urllib.request.Request(replica.control_url + "/admin/cluster", headers=AUTH)
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                return dict(json.load(answer))
        except (OSError, ValueError):
            return None

    def leader(self) -> str | None:
        """The replica that says it leads (None: none does, or several do)."""
        leading = [n for n in self.replicas if (self.status_sync(n) or {}).get("leading")]
        return leading[0] if len(leading) == 1 else None

    def all_route(self, to: str = "gpu") -> bool:
        return all(_backend_sync(r.url) == to for r in self.replicas.values() if r.alive())

    async def status(self, session: aiohttp.ClientSession, name: str) -> dict[str, Any] | None:
        replica = self.replicas[name]
        try:
            async with session.get(
                replica.control_url + "/admin/cluster",
                headers=AUTH,
                timeout=aiohttp.ClientTimeout(total=2),
            ) as answer:
                return dict(await answer.json())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def command(self, session: aiohttp.ClientSession, name: str, path: str) -> int:
        """POST a control command to replica ``name`` (a follower forwards it to the leader)."""
        replica = self.replicas[name]
        async with session.post(
            replica.control_url + path, headers=AUTH, timeout=aiohttp.ClientTimeout(total=15)
        ) as answer:
            await answer.read()
            return answer.status

    # ------------------------------------------------------------------------- teardown

    def close(self) -> None:
        for replica in self.replicas.values():
            with contextlib.suppress(Exception):
                replica.kill()
        for backend in self.backends:
            with contextlib.suppress(Exception):
                self.kill_backend(backend)
        if self.etcd is not None:
            self.etcd.stop()
        if self._netns_made:
            self._kill_namespace_leftovers()
            run(["ip", "netns", "del", self.netns], check=False)
            self._netns_made = False
        # Deleting the namespace deletes its veth end, and with it the pair; this is for a start
        # that failed between the two.
        run(["ip", "link", "del", self.veth_root], check=False)

    def _kill_namespace_leftovers(self) -> None:
        """Whatever still runs in the namespace (a hook's child, say), by pid from the kernel."""
        for _ in range(20):
            pids = {int(p) for p in run(["ip", "netns", "pids", self.netns], check=False).split()}
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _backend_sync(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url + "/work", timeout=3) as answer:
            return str(json.load(answer)["backend"])
    except (OSError, ValueError, KeyError):
        return None


# ------------------------------------------------------------------------------ the client


@dataclass
class RoundAnswers:
    """One round of the poller: when it started, and each replica's answer (a backend's name,
    an HTTP status, or "error"), when that answer arrived, and the Retry-After of each 503.

    A request to a dead backend is held by the data plane until its replica routes elsewhere
    (proxy.dataplane.exchange), so the time an answer *arrived* is when its replica switched;
    the round's start would make every replica of the round seem to switch together."""

    at: float
    answers: dict[str, str | int]
    done: dict[str, float]
    retry_after: dict[str, str | None]

    def backends(self) -> set[str]:
        return {a for a in self.answers.values() if isinstance(a, str) and a != "error"}


class Poller:
    """GET /work through every named replica at once, every ``pause`` seconds, until stopped: a
    user behind each replica. Each round is kept with the time it started."""

    def __init__(self, bed: ReplicaBed, names: Sequence[str], pause: float = 0.05) -> None:
        self.bed = bed
        self.names = list(names)
        self.pause = pause
        self.rounds: list[RoundAnswers] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while not self._stop.is_set():
                at = time.monotonic()
                answered = await asyncio.gather(*(self._one(session, n) for n in self.names))
                by_name = dict(zip(self.names, answered, strict=True))
                self.rounds.append(
                    RoundAnswers(
                        at,
                        {n: a for n, (a, _, _) in by_name.items()},
                        {n: d for n, (_, d, _) in by_name.items()},
                        {n: r for n, (_, _, r) in by_name.items()},
                    )
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.pause)

    async def _one(
        self, session: aiohttp.ClientSession, name: str
    ) -> tuple[str | int, float, str | None]:
        url = self.bed.replicas[name].url + "/work"
        try:
            async with session.get(url) as answer:
                body = await answer.read()
                if answer.status != 200:
                    return answer.status, time.monotonic(), answer.headers.get("Retry-After")
                return str(json.loads(body)["backend"]), time.monotonic(), None
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            return "error", time.monotonic(), None

    def stop(self) -> None:
        self._stop.set()

    def first(self, name: str, answer: str | int, after: float) -> RoundAnswers | None:
        """The first round that *started* at or after ``after`` in which ``name`` answered so."""
        return next(
            (r for r in self.rounds if r.at >= after and r.answers.get(name) == answer), None
        )

    def arrived(self, name: str, answer: str | int, after: float) -> float | None:
        """When ``name``'s first such answer *arrived* at or after ``after``."""
        return next(
            (
                r.done[name]
                for r in self.rounds
                if name in r.done and r.done[name] >= after and r.answers[name] == answer
            ),
            None,
        )


@contextlib.asynccontextmanager
async def polling(
    bed: ReplicaBed, names: Sequence[str] | None = None, pause: float = 0.05
) -> AsyncIterator[Poller]:
    """A Poller running for the block; stopped and awaited on the way out, even on failure."""
    poller = Poller(bed, list(bed.replicas) if names is None else names, pause)
    tasks = TaskSet("poller")
    running = tasks.spawn(poller.run(), name="poller")
    try:
        yield poller
    finally:
        poller.stop()
        await asyncio.wait([running], timeout=10)
        await tasks.close()


def split_windows(rounds: Sequence[RoundAnswers]) -> list[tuple[float, float]]:
    """Each stretch during which two replicas' latest answers came from different backends, by
    the time each answer arrived: (began, ended). An error or a status keeps a replica's last
    backend (it sent nobody elsewhere)."""
    arrivals = sorted(
        (r.done[n], n, a) for r in rounds for n, a in r.answers.items() if isinstance(a, str)
    )
    latest: dict[str, str] = {}
    windows = []
    began: float | None = None
    for at, name, answer in arrivals:
        if answer == "error":
            continue
        latest[name] = answer
        split = len(set(latest.values())) > 1
        if split and began is None:
            began = at
        elif not split and began is not None:
            windows.append((began, at))
            began = None
    if began is not None and arrivals:
        windows.append((began, arrivals[-1][0]))
    return windows
