"""A replica's presence in the cluster, and its proof of contact with the store.

Each replica keeps ``PREFIX/replicas/ID`` alive on a lease of its own, renewed every third of the
TTL: the leader reads who is there (and what each one sees), and a replica that dies vanishes
from the store one TTL later. The same renewals tell the replica itself whether it still reaches
the store: counted from the send of the last renewal that succeeded, as the leader counts its
lease (proxy.cluster.leader.LeaseClock), a replica out of contact for a TTL knows that the
cluster may have decided without it, and stops routing by decisions it can no longer confirm.
While out of contact it retries quickly, so that a healed link routes again within a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from .etcd import Etcd, EtcdError
from .leader import LeaseClock

__all__ = ["Presence"]

log = logging.getLogger("dumont.cluster")

RETRY = 0.2  # seconds between renewals while out of contact


class Presence:
    def __init__(
        self,
        etcd: Etcd,
        prefix: str,
        replica: str,
        ttl: int,
        describe: Callable[[], dict[str, Any]] = dict,
        now: Callable[[], float] | None = None,
        on_contact: Callable[[bool], None] = lambda _: None,
    ) -> None:
        self.etcd = etcd
        self.key = f"{prefix}/replicas/{replica}"
        self.replica = replica
        self.ttl = ttl
        self.describe = describe
        self.on_contact = on_contact
        self._now = now or (lambda: asyncio.get_running_loop().time())
        self.contact = LeaseClock(ttl, margin=0.0)
        self.lease = 0
        self._was_in_contact = False
        self._deadline: asyncio.TimerHandle | None = None

    def in_contact(self) -> bool:
        return self.contact.may_act(self._now())

    def contact_age(self) -> float:
        """Seconds since the last renewal that succeeded was sent; infinity before the first."""
        sent = self.contact.renewed_at
        return float("inf") if sent is None else self._now() - sent

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._renew()
                    await asyncio.sleep(self.ttl / 3)
                except EtcdError as exc:
                    if self._was_in_contact:
                        log.warning("%s: the store does not answer: %s", self.replica, exc)
                    await asyncio.sleep(RETRY)
        finally:
            if self._deadline is not None:
                self._deadline.cancel()

    async def leave(self) -> None:
        """Graceful shutdown: the leader sees this replica gone at once."""
        lease, self.lease = self.lease, 0
        if lease:
            try:
                await self.etcd.revoke(lease)
            except EtcdError as exc:
                log.info("%s: leaving the cluster: %s", self.replica, exc)

    async def _renew(self) -> None:
        sent = self._now()
        if self.lease and await self.etcd.keepalive(self.lease, timeout=self.ttl / 3) > 0:
            self._contacted(sent)
            return
        # No lease yet, or it expired while we were away: a new one, and the key on it. The
        # contact it proves is counted from the grant, not from the keepalive that found the
        # lease gone: that one may have tried every member in turn for longer than a TTL, and
        # counted from its start, the contact was over before it began (in contact and lost
        # in one millisecond, routing back only a renewal period later: test_presence.py).
        sent = self._now()
        self.lease = await self.etcd.grant(self.ttl)
        await self.etcd.put(self.key, json.dumps(self.describe()).encode(), self.lease)
        self._contacted(sent)

    def _contacted(self, sent: float) -> None:
        self.contact.renewed(sent)
        if not self._was_in_contact:
            self._was_in_contact = True
            log.warning("%s is in contact with the store", self.replica)
            self.on_contact(True)
        if self._deadline is not None:
            self._deadline.cancel()
        until = self.contact.acting_until()
        assert until is not None
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(max(0.0, until - self._now()), self._lost)

    def _lost(self) -> None:
        self._deadline = None
        if self._was_in_contact and not self.in_contact():
            self._was_in_contact = False
            log.warning(
                "%s lost the store for %d s: it stops routing until it is back",
                self.replica,
                self.ttl,
                extra={"fields": {"event": "store_lost", "ttl": self.ttl}},
            )
            self.on_contact(False)
