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


async def test_back_from_a_long_cut_it_stays_in_contact(etcd_cluster: EtcdCluster) -> None:
    """Cut from all three members, a renewal tries each in turn for seconds; the one that gets
    through after healing must not count from when that try began, or the contact it proves
    has already run out: "in contact" then "lost" in the same millisecond, and routing back
    only a renewal period later."""
    relays = [await Relay(m.client_port).start() for m in etcd_cluster.members]
    etcd = Etcd([r.endpoint for r in relays], timeout=TTL / 3)
    changes: list[tuple[float, bool]] = []
    presence = Presence(
        etcd, "/d", "r3", TTL, on_contact=lambda up: changes.append((time.monotonic(), up))
    )
    task = asyncio.ensure_future(presence.run())  # noqa: TID251 - cancelled below
    try:
        await until(presence.in_contact, "in contact")
        for relay in relays:
            relay.cut()
        await until(lambda: changes[-1][1] is False, "out of contact", timeout=TTL + 1)
        await asyncio.sleep(3 * TTL)  # past the lease: the renewal that heals grants anew
        for relay in relays:
            relay.heal()
        healed = time.monotonic()
        await until(lambda: changes[-1][1] is True, "back", timeout=5)
        await asyncio.sleep(1.0)
        assert [up for at, up in changes if at >= healed] == [True]
        assert presence.in_contact()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await etcd.close()
        for relay in relays:
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
