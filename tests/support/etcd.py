"""A real etcd cluster on loopback for the replica tests: three members by default, each its own
process group (SIGKILL or SIGSTOP one to fail it), data in the test's temporary directory.

    cluster = EtcdCluster.start(tmp_path, members=3)
    cluster.endpoints          # ["http://127.0.0.1:P1", ...]
    cluster.kill(1)            # member 1 is gone; the other two keep a quorum
    cluster.stop()             # every member, even after a failure
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.processes import kill_group, signal_group

__all__ = ["EtcdCluster", "Relay", "etcd_cluster"]

ETCD = shutil.which("etcd")


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"  # the client URL's address: another one reaches a network namespace

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.client_port}"


@dataclass
class EtcdCluster:
    members: list[Member] = field(default_factory=list)

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @classmethod
    def start(cls, root: Path, members: int = 3, host: str = "127.0.0.1") -> EtcdCluster:
        if ETCD is None:
            raise RuntimeError("etcd is not installed (scripts/install-debian-deps.sh)")
        cluster = cls()
        for index in range(members):
            name = f"m{index}"
            cluster.members.append(
                Member(
                    name,
                    free_port(),
                    free_port(),
                    root / f"etcd-{name}",
                    root / f"{name}.log",
                    host=host,
                )
            )
        initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in cluster.members)
        try:
            for member in cluster.members:
                cluster._launch(member, initial)
            cluster.wait_healthy(timeout=30)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _launch(self, member: Member, initial: str) -> None:
        assert ETCD is not None
        peer = f"http://127.0.0.1:{member.peer_port}"
        argv = [
            ETCD,
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={member.endpoint}",
            f"--advertise-client-urls={member.endpoint}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={initial}",
            "--initial-cluster-state=new",
            "--initial-cluster-token=dumont-test",
            # Loopback: elections in a few hundred ms rather than etcd's WAN-safe defaults.
            "--heartbeat-interval=50",
            "--election-timeout=500",
        ]
        with member.log.open("ab") as log:
            member.popen = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def healthy(self, index: int) -> bool:
        try:
            url = f"{self.members[index].endpoint}/health"
            with urllib.request.urlopen(url, timeout=1) as answer:
                return bool(json.load(answer).get("health") == "true")
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float, indices: list[int] | None = None) -> None:
        wanted = range(len(self.members)) if indices is None else indices
        deadline = time.monotonic() + timeout
        while not all(self.healthy(i) for i in wanted):
            for member in self.members:
                if member.popen is not None and member.popen.poll() is not None:
                    log = member.log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"etcd {member.name} exited:\n{log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd cluster not healthy within {timeout}s")
            time.sleep(0.1)

    def kill(self, index: int) -> None:
        member = self.members[index]
        if member.popen is not None:
            kill_group(member.popen)

    def pause(self, index: int) -> None:
        popen = self.members[index].popen
        if popen is not None:
            signal_group(popen.pid, signal.SIGSTOP)

    def stop(self) -> None:
        for member in self.members:
            if member.popen is not None:
                with contextlib.suppress(Exception):
                    kill_group(member.popen)


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster.start(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


class Relay:
    """A TCP relay in front of one etcd member, for one replica: ``cut()`` partitions that replica
    from the store (bytes stop flowing both ways, new connections hang) and ``heal()`` ends it,
    while every other client keeps talking to the member directly."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.delay = 0.0  # seconds each chunk is held, each way: a slow store, not a lost one
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> None:
        self.flowing.clear()

    def heal(self) -> None:
        self.flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        await self.flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(source, sink))  # noqa: TID251 - kept in _tasks, cancelled in close()
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                await self.flowing.wait()  # a cut holds the bytes, as a dead link would
                if self.delay:
                    await asyncio.sleep(self.delay)
                sink.write(data)
                await sink.drain()
        sink.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()
