"""The etcd client against a real three-member cluster: the JSON gateway's wire format, leases,
transactions, watches, and a member's death."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from proxy.cluster.etcd import Compare, Etcd, EtcdUnavailable, WatchEvent, prefix_end, put_op
from tests.support.etcd import EtcdCluster, etcd_cluster

__all__ = ["etcd_cluster"]  # fixture

pytestmark = pytest.mark.slow


@pytest.fixture
async def etcd(etcd_cluster: EtcdCluster) -> AsyncIterator[Etcd]:
    client = Etcd(etcd_cluster.endpoints, timeout=1.0)
    yield client
    await client.close()


def test_prefix_end() -> None:
    assert prefix_end("/dumont/") == b"/dumont0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff") == b"\0"  # every key


async def test_put_get_prefix_and_delete(etcd: Etcd) -> None:
    first = await etcd.put("/d/workspaces/alice", b'{"a": 1}')
    await etcd.put("/d/workspaces/bob", b"")
    await etcd.put("/d/other", b"x")
    revision, kvs = await etcd.get_prefix("/d/workspaces/")
    assert revision > first
    assert [(kv.key, kv.value) for kv in kvs] == [
        ("/d/workspaces/alice", b'{"a": 1}'),
        ("/d/workspaces/bob", b""),  # an empty value survives the gateway's omissions
    ]
    assert kvs[0].create_revision == first
    await etcd.delete("/d/workspaces/alice")
    assert await etcd.get("/d/workspaces/alice") is None


async def test_a_create_only_transaction_lets_one_of_two_win(etcd: Etcd) -> None:
    lease = await etcd.grant(5)

    async def take(me: bytes) -> bool:
        compare = [Compare("/d/leader", "CREATE", 0)]
        return (await etcd.txn(compare, [put_op("/d/leader", me, lease)])).succeeded

    won = await asyncio.gather(take(b"r1"), take(b"r2"))
    assert sorted(won) == [False, True]
    held = await etcd.get("/d/leader")
    assert held is not None
    assert held.lease == lease
    assert (await etcd.txn([Compare("/d/leader", "VALUE", held.value)], [])).succeeded


async def test_a_lease_renewed_lives_and_a_revoked_one_takes_its_keys(etcd: Etcd) -> None:
    lease = await etcd.grant(2)
    await etcd.put("/d/leader", b"r1", lease)
    assert 0 < await etcd.keepalive(lease) <= 2
    await etcd.revoke(lease)
    assert await etcd.get("/d/leader") is None
    assert await etcd.keepalive(lease) == 0
    await etcd.revoke(lease)  # twice is fine


async def test_a_watch_sees_puts_and_deletes_in_order_from_a_revision(etcd: Etcd) -> None:
    start = await etcd.put("/d/w/a", b"1")
    await etcd.put("/d/w/b", b"2")
    await etcd.delete("/d/w/a")
    seen: list[WatchEvent] = []

    async def follow() -> None:
        async for event in etcd.watch("/d/w/", start):
            seen.append(event)
            if len(seen) == 4:
                return

    watching = asyncio.ensure_future(follow())  # noqa: TID251 - awaited below
    await etcd.put("/d/w/c", b"3")
    await asyncio.wait_for(watching, 10)
    assert [(e.kind, e.kv.key, e.kv.value) for e in seen] == [
        ("put", "/d/w/a", b"1"),
        ("put", "/d/w/b", b"2"),
        ("delete", "/d/w/a", b""),
        ("put", "/d/w/c", b"3"),
    ]


async def test_a_dead_member_is_skipped_and_no_member_is_unavailable(
    etcd: Etcd, etcd_cluster: EtcdCluster
) -> None:
    await etcd.put("/d/x", b"1")
    etcd_cluster.kill(0)  # the endpoint the client uses first
    await etcd.put("/d/x", b"2")
    kv = await etcd.get("/d/x")
    assert kv is not None
    assert kv.value == b"2"
    etcd_cluster.kill(1)
    etcd_cluster.kill(2)
    with pytest.raises(EtcdUnavailable, match="no etcd member answered"):
        await etcd.get("/d/x")
