"""Decisions with fencing tokens in a real etcd: the leader's reach every follower in
milliseconds, tokens only grow, and a deposed leader's late write is refused by the store."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from functools import partial

import pytest

from proxy.cluster.decisions import Decision, Decisions
from proxy.cluster.etcd import Etcd
from proxy.cluster.leader import Leadership, Term
from tests.support.etcd import EtcdCluster, etcd_cluster
from tests.support.waiting import until

__all__ = ["etcd_cluster"]  # fixture

pytestmark = pytest.mark.slow


class Node:
    def __init__(self, name: str, endpoints: list[str]) -> None:
        self.etcd = Etcd(endpoints)
        self.leadership = Leadership(self.etcd, "/d/leader", name, 2, lambda _: None)
        self.seen: list[tuple[float, Decision]] = []
        self.decisions = Decisions(self.etcd, "/d", self.leadership, self._seen)
        self.tasks: list[asyncio.Task[None]] = []

    def _seen(self, decision: Decision) -> None:
        self.seen.append((time.monotonic(), decision))

    async def start(self) -> None:
        await self.decisions.load()
        for job in (self.leadership.run(), self.decisions.follow()):
            self.tasks.append(asyncio.ensure_future(job))  # noqa: TID251 - cancelled in close()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.etcd.close()


def _has_seen(node: Node, token: int) -> bool:
    return any(d.token == token for _, d in node.seen)


@pytest.fixture
async def nodes(etcd_cluster: EtcdCluster) -> AsyncIterator[tuple[Node, Node]]:
    a, b = Node("a", etcd_cluster.endpoints), Node("b", etcd_cluster.endpoints)
    await a.start()
    await until(lambda: a.leadership.leading() is not None, "a leads")
    await b.start()
    yield a, b
    await a.close()
    await b.close()


async def test_decisions_reach_the_follower_fast_with_growing_tokens(
    nodes: tuple[Node, Node],
) -> None:
    leader, follower = nodes
    sent: list[tuple[float, int]] = []
    for epoch in range(1, 41):
        started = time.monotonic()
        decision = await leader.decisions.publish(
            "alice", "standby" if epoch % 2 else "primary", epoch
        )
        assert decision is not None
        token = decision.token
        sent.append((started, token))
        await until(partial(_has_seen, follower, token), "propagated")
    seen_at = {d.token: at for at, d in follower.seen}
    delays = sorted(seen_at[token] - at for at, token in sent)
    assert statistics.median(delays) < 0.1, delays
    tokens = [token for _, token in sent]
    assert tokens == sorted(set(tokens))
    assert follower.decisions.latest["alice"].epoch == 40


async def test_a_deposed_leaders_late_write_is_refused(nodes: tuple[Node, Node]) -> None:
    leader, follower = nodes
    assert await leader.decisions.publish("alice", "primary", 1) is not None
    term = leader.leadership.term
    assert term is not None
    campaign = leader.tasks[0]  # the old leader stops campaigning, then gives its lease back
    campaign.cancel()
    await asyncio.gather(campaign, return_exceptions=True)
    await leader.leadership.resign()
    await until(lambda: follower.leadership.leading() is not None, "b leads", timeout=5)
    # The old leader, unaware, still believes in its term: the store says no.
    leader.leadership.term = Term(term.replica, term.revision)
    leader.leadership.clock.renewed(asyncio.get_running_loop().time())
    assert await leader.decisions.publish("alice", "standby", 2) is None
    decision = await follower.decisions.publish("alice", "standby", 2)
    assert decision is not None
    assert decision.term > term.revision
