"""One leader among replicas: the lease rule with a fake clock, then real replicas against a real
three-member etcd: a crash, a resignation, and a replica cut off from the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import cast

import pytest

from proxy.cluster.etcd import Etcd
from proxy.cluster.leader import Leadership, LeaseClock, Term
from tests.support.etcd import EtcdCluster, Relay, etcd_cluster
from tests.support.waiting import until

__all__ = ["etcd_cluster"]  # fixture

TTL = 2


def test_a_leader_stops_acting_a_margin_before_its_lease_can_expire() -> None:
    clock = LeaseClock(ttl=3.0, margin=1.0)
    assert not clock.may_act(0.0)
    clock.renewed(10.0)  # sent at 10: etcd keeps the lease until at least 13
    assert clock.may_act(11.9)
    assert not clock.may_act(12.0)
    clock.renewed(9.0)  # a late answer to an older renewal moves nothing back
    assert clock.acting_until() == 12.0
    clock.lost()
    assert not clock.may_act(10.5)
    with pytest.raises(ValueError, match="margin"):
        LeaseClock(ttl=2.0, margin=2.0)


class SlowStore:
    """Just enough of Etcd for a campaign, each call taking ``rtt`` (received half-way), with
    someone else holding the leader key until ``free()``; it notes when etcd last received a
    grant or keepalive of our lease, which is what the lease's expiry counts from."""

    def __init__(self, rtt: float) -> None:
        self.rtt = rtt
        self.holder = b"other"
        self.refreshed_at = 0.0  # loop time etcd last received our grant or keepalive

    async def _trip(self) -> float:
        await asyncio.sleep(self.rtt / 2)
        received = asyncio.get_running_loop().time()
        await asyncio.sleep(self.rtt / 2)
        return received

    async def grant(self, ttl: int) -> int:
        self.refreshed_at = await self._trip()
        return 7

    async def keepalive(self, lease: int, timeout: float | None = None) -> int:
        self.refreshed_at = await self._trip()
        return TTL

    async def txn(self, compares: object, success: object) -> SimpleNamespace:
        await self._trip()
        taken = self.holder == b""
        if taken:
            self.holder = b"me"
        return SimpleNamespace(succeeded=taken)

    async def get(self, key: str) -> SimpleNamespace | None:
        await self._trip()
        return SimpleNamespace(
            value=self.holder, create_revision=5, lease=7 if self.holder == b"me" else 9
        )


async def test_a_leader_elected_on_an_old_lease_stops_before_that_lease_can_expire() -> None:
    """The campaign kept its lease alive between tries; elected, it must count its time from
    that lease's last refresh, not from the winning transaction, which came a third of a TTL
    and a round trip later: etcd expires the lease from the refresh."""
    store = SlowStore(rtt=0.1)
    elected: list[Term | None] = []
    leadership = Leadership(cast(Etcd, store), "/d/leader", "me", TTL, elected.append)
    task = asyncio.ensure_future(leadership.run())  # noqa: TID251 - cancelled below
    try:
        await asyncio.sleep(0.5)  # a try or two while "other" leads
        store.holder = b""
        await until(lambda: elected, "elected", timeout=5, interval=0.01)
        until_ = leadership.clock.acting_until()
        assert until_ is not None
        assert until_ <= store.refreshed_at + TTL, (
            f"acts {until_ - store.refreshed_at - TTL:.3f} s past the lease's expiry"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Replica:
    def __init__(self, name: str, endpoints: list[str]) -> None:
        self.etcd = Etcd(endpoints, timeout=0.5)
        self.changes: list[tuple[float, Term | None]] = []
        self.leadership = Leadership(self.etcd, "/d/leader", name, TTL, self._heard)
        self.task: asyncio.Task[None] | None = None

    def _heard(self, term: Term | None) -> None:
        self.changes.append((time.monotonic(), term))

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.leadership.run())  # noqa: TID251 - stopped in crash()/the fixture

    async def crash(self) -> None:
        """Stop without giving the lease back, as a SIGKILLed replica would."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def close(self) -> None:
        await self.crash()
        await self.etcd.close()


Start = Callable[..., Replica]


@pytest.fixture
async def replicas(etcd_cluster: EtcdCluster) -> AsyncIterator[Start]:
    made: list[Replica] = []

    def start(name: str, endpoints: list[str] | None = None) -> Replica:
        replica = Replica(name, endpoints or etcd_cluster.endpoints)
        replica.start()
        made.append(replica)
        return replica

    yield start
    for replica in made:
        await replica.close()


def leaders(*replicas: Replica) -> list[Replica]:
    return [r for r in replicas if r.leadership.leading() is not None]


async def test_one_of_three_leads_and_a_crash_hands_over_within_the_ttl(replicas: Start) -> None:
    group = [replicas(f"r{i}") for i in range(3)]
    await until(lambda: len(leaders(*group)) == 1, "a leader")
    first = leaders(*group)[0]
    term = first.leadership.term
    assert term is not None
    await first.crash()
    crashed = time.monotonic()
    rest = [r for r in group if r is not first]
    await until(lambda: len(leaders(*rest)) == 1, "a new leader", timeout=TTL + 3)
    took = time.monotonic() - crashed
    assert took < TTL + 1.5, took
    new_term = leaders(*rest)[0].leadership.term
    assert new_term is not None
    assert new_term.revision > term.revision  # the fencing token only grows


async def test_a_resignation_hands_over_at_once(replicas: Start) -> None:
    a, b = replicas("a"), replicas("b")
    await until(lambda: len(leaders(a, b)) == 1, "a leader")
    first, other = (a, b) if leaders(a, b)[0] is a else (b, a)
    await first.leadership.resign()
    await first.crash()
    resigned = time.monotonic()
    await until(lambda: leaders(other) == [other], "the other leads", timeout=TTL + 3)
    assert time.monotonic() - resigned < TTL  # not the lease's expiry: the revoke


async def test_a_leader_cut_off_from_the_store_stops_before_another_starts(
    replicas: Start, etcd_cluster: EtcdCluster
) -> None:
    relay = await Relay(etcd_cluster.members[0].client_port).start()
    try:
        cut_off = replicas("cut", [relay.endpoint])
        await until(lambda: leaders(cut_off) == [cut_off], "the relayed replica leads")
        other = replicas("other")
        await asyncio.sleep(0.2)
        relay.cut()
        await until(lambda: leaders(other) == [other], "the other leads", timeout=TTL + 4)
        stopped = next(at for at, term in cut_off.changes if term is None)
        started = next(at for at, term in other.changes if term is not None)
        assert stopped < started  # never two leaders acting at once
        assert leaders(cut_off) == []
        relay.heal()
        await asyncio.sleep(TTL)
        assert leaders(cut_off, other) == [other]
    finally:
        await relay.close()
