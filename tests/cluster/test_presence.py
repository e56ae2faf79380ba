"""A replica's presence and its contact with the store, against a real etcd: it vanishes a TTL
after it dies, knows within a TTL that it is cut off, and is back within a second of healing."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.cluster.etcd import Etcd
from proxy.cluster.presence import Presence
from tests.support.etcd import EtcdCluster, Relay, etcd_cluster
from tests.support.waiting import until

__all__ = ["etcd_cluster"]  # fixture

pytestmark = pytest.mark.slow

TTL = 2


async def test_presence_contact_loss_and_return(etcd_cluster: EtcdCluster) -> None:
    relay = await Relay(etcd_cluster.members[0].client_port).start()
    etcd = Etcd([relay.endpoint], timeout=0.5)
    watcher = Etcd(etcd_cluster.endpoints)
    changes: list[tuple[float, bool]] = []
    presence = Presence(
        etcd,
        "/d",
        "r1",
        TTL,
        lambda: {"views": 1},
        on_contact=lambda up: changes.append((time.monotonic(), up)),
    )
    task = asyncio.ensure_future(presence.run())  # noqa: TID251 - cancelled below
    try:
        await until(presence.in_contact, "in contact")
        listed = await watcher.get("/d/replicas/r1")
        assert listed is not None
        assert listed.value == b'{"views": 1}'
        relay.cut()
        cut = time.monotonic()
        await until(lambda: not presence.in_contact(), "out of contact", timeout=TTL + 1)
        assert time.monotonic() - cut <= TTL + 0.5
        await until(lambda: changes[-1][1] is False, "told")
        relay.heal()
        healed = time.monotonic()
        await until(presence.in_contact, "back", timeout=2)
        assert time.monotonic() - healed < 1.0
        await presence.leave()
        assert await watcher.get("/d/replicas/r1") is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await etcd.close()
        await watcher.close()
        await relay.close()


async def test_a_dead_replica_vanishes_one_ttl_later(etcd_cluster: EtcdCluster) -> None:
    etcd = Etcd(etcd_cluster.endpoints)
    presence = Presence(etcd, "/d", "r2", TTL)
    task = asyncio.ensure_future(presence.run())  # noqa: TID251 - cancelled below
    try:
        await until(presence.in_contact, "in contact")
        task.cancel()  # dies without leaving
        await asyncio.gather(task, return_exceptions=True)
        died = time.monotonic()
        while await etcd.get("/d/replicas/r2") is not None:
            await asyncio.sleep(0.1)
        assert time.monotonic() - died <= TTL + 1.5
    finally:
        task.cancel()
        await etcd.close()
