"""The cluster's workspaces in a real etcd: seeded once, written by one replica and applied by
another, a malformed entry skipped by name, a member's death survived."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.cluster.etcd import Etcd
from proxy.cluster.registry import WorkspaceRegistry
from proxy.config import workspace_setting
from proxy.workspaces.spec import WorkspaceSpec, parse_workspace
from tests.support.etcd import EtcdCluster, etcd_cluster
from tests.support.waiting import until

__all__ = ["etcd_cluster"]  # fixture

pytestmark = pytest.mark.slow


def parse(name: str, document: Any) -> WorkspaceSpec:
    return parse_workspace(name, document, workspace_setting, where="cluster")


def spec(name: str, port: int) -> WorkspaceSpec:
    document = {
        "hosts": [f"{name}.test"],
        "primary": f"http://10.0.0.1:{port}",
        "standby": f"http://10.0.0.2:{port}",
    }
    return parse(name, document)


class Replica:
    def __init__(self, endpoints: list[str]) -> None:
        self.etcd = Etcd(endpoints, timeout=0.5)
        self.applied: dict[str, WorkspaceSpec] = {}
        self.registry = WorkspaceRegistry(self.etcd, "/d", parse, self.apply)
        self.task: asyncio.Task[None] | None = None

    async def apply(self, name: str, spec: WorkspaceSpec | None) -> None:
        if spec is None:
            self.applied.pop(name, None)
        else:
            self.applied[name] = spec

    async def start(self, configured: list[WorkspaceSpec]) -> None:
        await self.registry.seed(configured)
        self.applied = await self.registry.load()
        self.task = asyncio.ensure_future(self.registry.follow())  # noqa: TID251 - cancelled in close()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.etcd.close()


@pytest.fixture
async def pair(etcd_cluster: EtcdCluster) -> AsyncIterator[tuple[Replica, Replica]]:
    a, b = Replica(etcd_cluster.endpoints), Replica(etcd_cluster.endpoints)
    yield a, b
    await a.close()
    await b.close()


async def test_the_first_replica_seeds_and_the_second_finds_it_seeded(
    pair: tuple[Replica, Replica],
) -> None:
    a, b = pair
    await a.start([spec("alice", 1)])
    await b.start([spec("bob", 2)])  # its file says bob; the cluster was seeded already
    assert set(a.applied) == set(b.applied) == {"alice"}


async def test_a_write_through_one_replica_reaches_the_other(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    await a.start([spec("alice", 1)])
    await b.start([])
    await a.registry.put("carol", spec("carol", 3).document())
    await until(lambda: "carol" in b.applied, "carol reaches b", timeout=1.0)
    await a.registry.delete("alice")
    await until(lambda: "alice" not in b.applied, "alice leaves b", timeout=1.0)
    assert b.applied["carol"] == spec("carol", 3)


async def test_a_malformed_entry_is_skipped_naming_its_key(
    pair: tuple[Replica, Replica], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = pair
    await a.start([spec("alice", 1)])
    await a.etcd.put("/d/workspaces/broken", b'{"hosts": ["x.test"], "primary": "ftp://nope"')
    await a.etcd.put("/d/workspaces/bad", b'{"hosts": [], "primary": "http://a:1"}')
    with caplog.at_level(logging.ERROR, "dumont.cluster"):
        await b.start([])
        await a.registry.put("carol", spec("carol", 3).document())
        await until(lambda: "carol" in b.applied, "carol reaches b")
    assert set(b.applied) == {"alice", "carol"}
    skipped = [r.getMessage() for r in caplog.records]
    assert any("/d/workspaces/broken: not JSON" in line for line in skipped), skipped
    assert any("/d/workspaces/bad" in line and "hosts" in line for line in skipped), skipped


async def test_a_dead_member_does_not_stop_the_watch(
    pair: tuple[Replica, Replica], etcd_cluster: EtcdCluster
) -> None:
    a, b = pair
    await a.start([])
    await b.start([])
    etcd_cluster.kill(0)  # the member b watches through
    await a.registry.put("dave", spec("dave", 4).document())
    await until(lambda: "dave" in b.applied, "dave reaches b", timeout=5.0)
