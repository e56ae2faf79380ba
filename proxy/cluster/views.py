"""What each replica sees of every workspace's backends, shared so that the leader can weigh it.

Each replica writes ``PREFIX/views/ID``: one JSON document, ``{workspace: {role: up}}`` (``up``
true, false or null before the first check), on its presence lease, so the view of a replica that
died vanishes with it. It is rewritten when a backend's health changes, at most every
``PUBLISH_PAUSE``. The leader counts, per workspace, the other replicas and how many of them see
each backend down (:func:`peer_counts`) and hands that to the workspace's machine (PeerViews),
which leaves a serving backend only when someone else agrees, or after ``view_grace``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping

from proxy.failover import ROLES, Role

from .etcd import Etcd, EtcdError, KeyValue, WatchEvent

__all__ = ["View", "ViewBoard", "peer_counts"]

log = logging.getLogger("dumont.cluster")

View = dict[str, dict[str, bool | None]]  # workspace -> role -> up
PUBLISH_PAUSE = 0.05  # coalesces the health changes of many workspaces into one write
RETRY = 0.2  # after a write the store did not take


def peer_counts(views: Mapping[str, View], me: str, workspace: str) -> tuple[int, dict[Role, int]]:
    """(how many other replicas publish a view, how many of them see each backend down)."""
    others = [view for replica, view in views.items() if replica != me]
    down: dict[Role, int] = {
        role: sum(1 for view in others if view.get(workspace, {}).get(role) is False)
        for role in ROLES
    }
    return len(others), down


class ViewBoard:
    def __init__(
        self,
        etcd: Etcd,
        prefix: str,
        replica: str,
        collect: Callable[[], View],
        lease: Callable[[], int],
        on_change: Callable[[], None],
    ) -> None:
        self.etcd = etcd
        self.root = f"{prefix}/views/"
        self.replica = replica
        self.collect = collect  # this replica's view now
        self.lease = lease  # the presence lease the view lives on (0: none yet)
        self.on_change = on_change  # another replica's view changed
        self.views: dict[str, View] = {}
        self.revision = 0
        self._dirty = asyncio.Event()
        self._dirty.set()  # the first view goes out at once

    def changed(self) -> None:
        """This replica's view changed: publish it soon."""
        self._dirty.set()

    async def publish(self) -> None:
        """Write this replica's view whenever it changed, for as long as the task runs."""
        while True:
            await self._dirty.wait()
            await asyncio.sleep(PUBLISH_PAUSE)
            self._dirty.clear()
            lease = self.lease()
            if not lease:  # no contact yet: the presence loop brings a lease, then we write
                self._dirty.set()
                await asyncio.sleep(RETRY)
                continue
            body = json.dumps(self.collect(), separators=(",", ":")).encode()
            try:
                await self.etcd.put(self.root + self.replica, body, lease)
            except EtcdError as exc:
                log.info("publishing this replica's view: %s", exc)
                self._dirty.set()
                await asyncio.sleep(RETRY)

    async def load(self) -> None:
        revision, kvs = await self.etcd.get_prefix(self.root)
        self.views = {}
        for kv in kvs:
            self._seen(kv)
        self.revision = revision
        self.on_change()

    async def follow(self) -> None:
        await self.etcd.follow(
            self.root, lambda: self.revision, self._event, self.load, "the replicas' views"
        )

    async def _event(self, event: WatchEvent) -> None:
        self.revision = max(self.revision, event.kv.mod_revision)
        if event.kind == "put":
            self._seen(event.kv)
        else:
            self.views.pop(event.kv.key.removeprefix(self.root), None)
        self.on_change()

    def _seen(self, kv: KeyValue) -> None:
        replica = kv.key.removeprefix(self.root)
        try:
            raw = json.loads(kv.value)
            if not isinstance(raw, dict):
                raise ValueError("not an object")
            self.views[replica] = {
                str(name): {
                    role: (None if roles.get(role) is None else bool(roles[role])) for role in ROLES
                }
                for name, roles in raw.items()
                if isinstance(roles, dict)
            }
        except ValueError as exc:
            log.error("skipping %s: %s", kv.key, exc)
