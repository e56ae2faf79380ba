"""A replica's presence in the cluster, and its proof of contact with the store.

Each replica keeps ``PREFIX/replicas/ID`` alive on a lease of its own, renewed every third of the
TTL: the leader reads who is there (and what each one sees), and a replica that dies vanishes
from the store one TTL later. The same renewals tell the replica itself whether it still reaches
the store: counted from the send of the last renewal that succeeded, as the leader counts its
lease (proxy.cluster.leader.LeaseClock), a replica out of contact for a TTL knows that the
cluster may have decided without it, and stops routing by decisions it can no longer confirm.
While out of contact it retries quickly, so that a healed link routes again within a second.

Renewals are sent every third of the TTL whether or not the previous one has answered (a few at
most in flight): a store that answers slowly, in anything under a TTL, is slow, not lost, and the
replica stays in contact and keeps routing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from proxy.tasks import TaskSet

from .etcd import Etcd, EtcdError
from .leader import LeaseClock

__all__ = ["Presence"]

log = logging.getLogger("dumont.cluster")

RETRY = 0.2  # seconds between renewals while out of contact
IN_FLIGHT = 4  # renewals waiting for an answer at once, at most


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
        self._renewals = TaskSet(f"presence-{replica}")

    def in_contact(self) -> bool:
        return self.contact.may_act(self._now())

    def contact_age(self) -> float:
        """Seconds since the last renewal that succeeded was sent; infinity before the first."""
        sent = self.contact.renewed_at
        return float("inf") if sent is None else self._now() - sent

    async def run(self) -> None:
        try:
            while True:
                if not self.lease:
                    try:
                        await self._establish()
                    except EtcdError as exc:
                        self._complain(exc)
                        await asyncio.sleep(RETRY)
                        continue
                elif len(self._renewals) < IN_FLIGHT:
                    self._renewals.spawn(self._renew(self.lease), name="renewal")
                await asyncio.sleep(self.ttl / 3 if self.in_contact() else RETRY)
        finally:
            if self._deadline is not None:
                self._deadline.cancel()
            await self._renewals.close()

    async def leave(self) -> None:
        """Graceful shutdown: the leader sees this replica gone at once."""
        lease, self.lease = self.lease, 0
        if lease:
            try:
                await self.etcd.revoke(lease)
            except EtcdError as exc:
                log.info("%s: leaving the cluster: %s", self.replica, exc)

    async def _establish(self) -> None:
        """No lease yet, or it expired while we were away: a new one, and the key on it."""
        sent = self._now()
        lease = await self.etcd.grant(self.ttl)
        await self.etcd.put(self.key, json.dumps(self.describe()).encode(), lease)
        self.lease = lease
        self._contacted(sent)

    async def _renew(self, lease: int) -> None:
        sent = self._now()
        try:
            remaining = await self.etcd.keepalive(lease, timeout=self.ttl)
        except EtcdError as exc:
            self._complain(exc)
            return
        if remaining > 0:
            self._contacted(sent)
        elif self.lease == lease:
            self.lease = 0  # expired while we were away: the run loop establishes a new one

    def _complain(self, exc: EtcdError) -> None:
        if self._was_in_contact:
            log.warning("%s: the store does not answer: %s", self.replica, exc)

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
