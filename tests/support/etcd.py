"""A real etcd cluster on loopback for the replica tests: three members by default, each its own
process group (SIGKILL or SIGSTOP one to fail it), data in the test's temporary directory.

    cluster = EtcdCluster.start(tmp_path, members=3)
    cluster.endpoints          # ["http://127.0.0.1:P1", ...]
    cluster.kill(1)            # member 1 is gone; the other two keep a quorum
    cluster.stop()             # every member, even after a failure
"""

from __future__ import annotations

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

__all__ = ["EtcdCluster", "etcd_cluster"]

ETCD = shutil.which("etcd")


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"


@dataclass
class EtcdCluster:
    members: list[Member] = field(default_factory=list)

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @classmethod
    def start(cls, root: Path, members: int = 3) -> EtcdCluster:
        if ETCD is None:
            raise RuntimeError("etcd is not installed (scripts/install-debian-deps.sh)")
        cluster = cls()
        for index in range(members):
            name = f"m{index}"
            cluster.members.append(
                Member(name, free_port(), free_port(), root / f"etcd-{name}", root / f"{name}.log")
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
