"""Sign-outs shared between replicas through a real etcd: a session revoked on one replica's book
is refused by another's within a second, and by a replica that starts afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.auth.seal import Sealer
from proxy.auth.sessions import SessionBook
from proxy.cluster.etcd import Etcd
from proxy.cluster.revocations import SharedRevocations
from tests.support.etcd import EtcdCluster, etcd_cluster
from tests.support.waiting import until

__all__ = ["etcd_cluster"]  # fixture

KEY = b"k" * 32


class Replica:
    def __init__(self, endpoints: list[str], state: Path | None = None) -> None:
        self.etcd = Etcd(endpoints)
        self.book = SessionBook(Sealer([KEY]), 3600.0, state)
        self.shared = SharedRevocations(self.etcd, "/t", self.book)
        self.tasks: list[asyncio.Task[None]] = []

        def signed_out(sid: str, expires: float) -> None:
            self.tasks.append(asyncio.ensure_future(self.shared.publish(sid, expires)))  # noqa: TID251 - cancelled in close()

        self.book.on_revoke.append(signed_out)

    async def start(self) -> Replica:
        await self.shared.load()
        self.tasks.append(asyncio.ensure_future(self.shared.follow()))  # noqa: TID251 - cancelled in close()
        return self

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.etcd.close()


@pytest.fixture
async def replicas(etcd_cluster: EtcdCluster) -> AsyncIterator[list[Replica]]:
    made: list[Replica] = []
    yield made
    for replica in made:
        await replica.close()


async def test_a_sign_out_on_one_replica_ends_the_session_on_every_replica(
    etcd_cluster: EtcdCluster, replicas: list[Replica], tmp_path: Path
) -> None:
    a = await Replica(etcd_cluster.endpoints).start()
    b = await Replica(etcd_cluster.endpoints, tmp_path / "b-revoked.json").start()
    replicas += [a, b]
    session, cookie = a.book.issue("ada@example.org", frozenset(), "ide.example.org")
    assert b.book.open(cookie) is not None  # the same keys: one session, every replica

    a.book.revoke(session)
    assert a.book.open(cookie) is None
    started = time.monotonic()
    await until(lambda: b.book.open(cookie) is None, timeout=5, what="b refusing the cookie")
    assert time.monotonic() - started < 1.0
    assert session.sid in (tmp_path / "b-revoked.json").read_text()  # kept across a restart

    c = await Replica(etcd_cluster.endpoints).start()  # a replica that starts afterwards
    replicas.append(c)
    assert c.book.open(cookie) is None
    _other, fresh = a.book.issue("ada@example.org", frozenset(), "ide.example.org")
    assert c.book.open(fresh) is not None  # only that session ended
