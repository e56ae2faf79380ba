"""One leader among the proxy replicas, the way Patroni elects PostgreSQL's: a lease, and a
transaction on the leader key that creates it only if nobody holds it.

- **Taking it**: grant a lease of ``ttl`` seconds; put the leader key with it, in a transaction
  whose only condition is that the key does not exist (create revision 0). The key's create
  revision is the leadership's term: every decision the leader writes is conditioned on it, so a
  deposed leader's late write is refused by the store itself.
- **Holding it**: renew the lease every ``ttl / 3``.
- **Letting go in time**: etcd expires the lease ``ttl`` after the last renewal *it received*,
  which is after the leader *sent* it. So a leader that counts ``ttl`` from the send of its last
  renewal that succeeded, and stops acting ``margin`` before that, stops before the lease can
  expire and another replica take over: two leaders never act at once, whatever the network
  does. That rule is :class:`LeaseClock`, pure, tested with a fake clock.
- **Giving it up** on shutdown: revoke the lease, so another replica takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .etcd import Compare, Etcd, EtcdError, put_op

__all__ = ["Leadership", "LeaseClock", "Term"]

log = logging.getLogger("dumont.cluster")


@dataclass(frozen=True)
class Term:
    """A leadership: who, and the leader key's create revision (the fencing token's base)."""

    replica: str
    revision: int


class LeaseClock:
    """When a leader must stop acting: ``ttl - margin`` after it sent its last good renewal."""

    def __init__(self, ttl: float, margin: float) -> None:
        if margin >= ttl:
            raise ValueError("the margin must be shorter than the lease")
        self.ttl = ttl
        self.margin = margin
        self.renewed_at: float | None = None  # when the last renewal that succeeded was sent

    def renewed(self, sent_at: float) -> None:
        if self.renewed_at is None or sent_at > self.renewed_at:
            self.renewed_at = sent_at

    def lost(self) -> None:
        self.renewed_at = None

    def acting_until(self) -> float | None:
        return None if self.renewed_at is None else self.renewed_at + self.ttl - self.margin

    def may_act(self, now: float) -> bool:
        until = self.acting_until()
        return until is not None and now < until


class Leadership:
    """Campaigns, holds and gives up the leader key; ``on_change(term | None)`` hears each change
    (None: this replica stopped leading)."""

    def __init__(
        self,
        etcd: Etcd,
        key: str,
        replica: str,
        ttl: int,
        on_change: Callable[[Term | None], None],
        now: Callable[[], float] | None = None,
    ) -> None:
        self.etcd = etcd
        self.key = key
        self.replica = replica
        self.ttl = ttl
        self.on_change = on_change
        self._now = now or (lambda: asyncio.get_running_loop().time())
        # A third of the lease: the renewal that failed can be retried once before acting ends.
        self.clock = LeaseClock(ttl, margin=ttl / 3)
        self.term: Term | None = None
        self.lease = 0
        self._deadline: asyncio.TimerHandle | None = None

    def leading(self) -> Term | None:
        """The term this replica leads in now, or None: checked before every decision."""
        if self.term is not None and self.clock.may_act(self._now()):
            return self.term
        return None

    async def run(self) -> None:
        """Campaign and hold until cancelled; store outages only make it retry."""
        try:
            while True:
                try:
                    if self.term is None:
                        await self._campaign()
                    else:
                        await self._renew()
                except EtcdError as exc:
                    log.warning("leader election: %s", exc)
                    await asyncio.sleep(self.ttl / 3)
        finally:
            self._step_down("shutting down")

    async def resign(self) -> None:
        """Give the lease back, so another replica takes over at once (graceful shutdown)."""
        lease, self.lease = self.lease, 0
        self._step_down("resigned")
        if lease:
            with contextlib.suppress(EtcdError):
                await self.etcd.revoke(lease)

    async def _campaign(self) -> None:
        # The lease is refreshed first and the time counted from before that: etcd expires it
        # TTL after the refresh it received, whatever the transaction below. Counted from the
        # transaction (a third of a TTL and a round trip after the last refresh, when the lease
        # was kept alive between tries) a new leader could act past its lease's expiry, while
        # another replica takes the key (test_leader.py).
        sent = self._now()
        if not self.lease or await self.etcd.keepalive(self.lease) == 0:
            sent = self._now()
            self.lease = await self.etcd.grant(self.ttl)
        taken = await self.etcd.txn(
            [Compare(self.key, "CREATE", 0)], [put_op(self.key, self.replica.encode(), self.lease)]
        )
        held = await self.etcd.get(self.key)
        if taken.succeeded and held is not None and held.value == self.replica.encode():
            self.clock.renewed(sent)
            self._elected(Term(self.replica, held.create_revision))
            return
        if held is not None and held.lease == self.lease:
            # Our own key from before (a campaign whose answer was lost): it is ours.
            self.clock.renewed(sent)
            self._elected(Term(self.replica, held.create_revision))
            return
        # Someone leads; our lease is kept alive by the next try, a third of a TTL from now.
        await asyncio.sleep(self.ttl / 3)

    async def _renew(self) -> None:
        await asyncio.sleep(self.ttl / 3)
        sent = self._now()
        until = self.clock.acting_until()
        budget = max(0.1, (until or sent) - sent)
        try:
            remaining = await self.etcd.keepalive(self.lease, timeout=budget)
        except EtcdError:
            if not self.clock.may_act(self._now()):
                self._step_down("could not renew the lease in time")
            raise
        if remaining == 0:
            self.lease = 0
            self._step_down("the lease expired")
            return
        self.clock.renewed(sent)
        self._arm()

    def _elected(self, term: Term) -> None:
        self.term = term
        log.warning(
            "%s leads (term %d)",
            self.replica,
            term.revision,
            extra={"fields": {"event": "leader_elected", "term": term.revision}},
        )
        self._arm()
        self.on_change(term)

    def _arm(self) -> None:
        """Step down exactly when acting must end, even while a renewal hangs."""
        if self._deadline is not None:
            self._deadline.cancel()
        until = self.clock.acting_until()
        if until is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, until - self._now())
            self._deadline = loop.call_later(delay, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        if self.term is not None and not self.clock.may_act(self._now()):
            self._step_down("the lease could not be renewed in time")

    def _step_down(self, why: str) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.clock.lost()
        if self.term is None:
            return
        term, self.term = self.term, None
        log.warning(
            "%s stops leading (term %d): %s",
            self.replica,
            term.revision,
            why,
            extra={"fields": {"event": "leader_lost", "term": term.revision, "why": why}},
        )
        self.on_change(None)
