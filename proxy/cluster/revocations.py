"""Signed-out sessions shared between replicas (issue 17 on top of issue 16).

A session lives in its sealed cookie, so every replica that has the configuration's keys can open
it: a user stays signed in through whichever replica the balancer picks. A logout, though, is a
revocation one replica hears of; kept only there, the same cookie would still open every other
replica. So each revocation is written to ``PREFIX/revoked/SID`` on a lease that ends when the
session would have expired anyway (the store forgets it when nobody needs it), and every replica
watches the prefix and adds what it sees to its own list.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from .etcd import Etcd, EtcdError, KeyValue, WatchEvent

__all__ = ["RevocationBook", "SharedRevocations"]

log = logging.getLogger("dumont.cluster")

RETRY = 1.0  # between attempts to share a sign-out while the store is away


class RevocationBook(Protocol):
    """proxy.auth.sessions.SessionBook as seen from here: who hears of its revocations, and how
    it learns another replica's."""

    on_revoke: list[Callable[[str, float], None]]

    def learn_revoked(self, sid: str, expires: float) -> None: ...


class SharedRevocations:
    def __init__(self, etcd: Etcd, prefix: str, book: RevocationBook) -> None:
        self.etcd = etcd
        self.root = f"{prefix}/revoked/"
        self.book = book
        self.revision = 0

    async def publish(self, sid: str, expires: float) -> None:
        """This replica revoked ``sid`` (a logout): every replica is told. The write is the only
        message, so it is retried until it lands or the session would have expired anyway."""
        while (remaining := math.ceil(expires - time.time())) > 0:
            try:
                lease = await self.etcd.grant(remaining)
                await self.etcd.put(self.root + sid, repr(expires).encode(), lease)
                return
            except EtcdError as exc:
                log.warning("sign-out not shared with the other replicas yet: %s", exc)
                await asyncio.sleep(RETRY)

    async def load(self) -> None:
        revision, kvs = await self.etcd.get_prefix(self.root)
        for kv in kvs:
            self._seen(kv)
        self.revision = revision

    async def follow(self) -> None:
        await self.etcd.follow(
            self.root, lambda: self.revision, self._event, self.load, "signed-out sessions"
        )

    async def _event(self, event: WatchEvent) -> None:
        self.revision = max(self.revision, event.kv.mod_revision)
        if event.kind == "put":
            self._seen(event.kv)

    def _seen(self, kv: KeyValue) -> None:
        sid = kv.key.removeprefix(self.root)
        try:
            expires = float(kv.value)
        except ValueError:
            log.error("skipping %s: not a time", kv.key)
            return
        self.book.learn_revoked(sid, expires)
