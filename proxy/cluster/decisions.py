"""Which machine serves each workspace, as the leader decided it: ``PREFIX/decisions/NAME``.

The leader writes a decision in a transaction that holds only while the leader key is still the
one its term created and still names it, so a deposed leader's late write changes nothing: the
store refuses it. The revision the write lands at is the decision's fencing token; tokens only
grow, and hooks get them (DUMONT_FENCING_TOKEN) so that the standby's fence can refuse a command
carrying an older one. Every replica watches the prefix and routes by what it last saw.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.failover import Role

from .etcd import Compare, Etcd, KeyValue, WatchEvent, put_op
from .leader import Leadership

__all__ = ["Decision", "Decisions"]

log = logging.getLogger("dumont.cluster")


@dataclass(frozen=True)
class Decision:
    workspace: str
    active: Role | None
    epoch: int
    term: int  # the leadership that wrote it
    token: int  # the store revision it landed at: the fencing token
    pinned: bool = False  # an operator's failover: no automatic failback

    def as_json(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "epoch": self.epoch,
            "term": self.term,
            "token": self.token,
            "pinned": self.pinned,
        }


class Decisions:
    def __init__(
        self,
        etcd: Etcd,
        prefix: str,
        leadership: Leadership,
        on_decision: Callable[[Decision], None],
    ) -> None:
        self.etcd = etcd
        self.root = f"{prefix}/decisions/"
        self.leadership = leadership
        self.on_decision = on_decision
        self.revision = 0
        self.latest: dict[str, Decision] = {}

    async def publish(
        self, workspace: str, active: Role | None, epoch: int, pinned: bool = False
    ) -> Decision | None:
        """Write the leader's decision; None when this replica does not lead (any more)."""
        term = self.leadership.leading()
        if term is None:
            return None
        leader_key = self.leadership.key
        written = {"active": active, "epoch": epoch, "term": term.revision, "pinned": pinned}
        body = json.dumps(written).encode()
        result = await self.etcd.txn(
            [
                Compare(leader_key, "CREATE", term.revision),
                Compare(leader_key, "VALUE", term.replica.encode()),
            ],
            [put_op(self.root + workspace, body)],
        )
        if not result.succeeded:
            log.warning(
                "decision for %s refused: this replica's term %d is over", workspace, term.revision
            )
            return None
        return Decision(workspace, active, epoch, term.revision, result.revision, pinned)

    async def load(self) -> dict[str, Decision]:
        revision, kvs = await self.etcd.get_prefix(self.root)
        for kv in kvs:
            self._seen(kv)
        self.revision = revision
        return dict(self.latest)

    async def follow(self) -> None:
        await self.etcd.follow(
            self.root, lambda: self.revision, self._event, self.load, "decisions"
        )

    async def _event(self, event: WatchEvent) -> None:
        self.revision = max(self.revision, event.kv.mod_revision)
        if event.kind == "put":
            self._seen(event.kv)
        else:
            self.latest.pop(event.kv.key.removeprefix(self.root), None)

    def _seen(self, kv: KeyValue) -> None:
        name = kv.key.removeprefix(self.root)
        try:
            raw = json.loads(kv.value)
            active = raw["active"]
            if active not in ("primary", "standby", None):
                raise ValueError(f"active is {active!r}")
            decision = Decision(
                name,
                active,
                int(raw["epoch"]),
                int(raw["term"]),
                kv.mod_revision,
                bool(raw.get("pinned", False)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            log.error("skipping %s: %s", kv.key, exc)
            return
        previous = self.latest.get(name)
        if previous is not None and previous.token >= decision.token:
            return  # an older write seen late
        self.latest[name] = decision
        self.on_decision(decision)
