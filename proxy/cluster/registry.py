"""The workspaces of a cluster, kept in etcd under ``PREFIX/workspaces/NAME`` (one JSON document
each, as proxy.workspaces.spec reads it): the control API of any replica writes there, and every
replica watches the prefix and applies each change to its own sites.

An entry that does not parse (written by hand, by an older version, cut short) is skipped with
one log line naming the key; every other workspace keeps being served. The TOML seeds an empty
cluster once: a marker key, created in the same transaction as the seed, says it was done, so a
workspace deleted through the API never comes back from a replica's file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from proxy.settings import SettingError
from proxy.workspaces.spec import WorkspaceSpec

from .etcd import Compare, Etcd, KeyValue, WatchEvent, put_op

__all__ = ["WorkspaceRegistry"]

log = logging.getLogger("dumont.cluster")

# Parses one stored document: (name, document) -> spec, raising SettingError naming the field.
Parse = Callable[[str, Any], WorkspaceSpec]
# Applies one change locally: a spec to create or replace, None to delete.
Apply = Callable[[str, WorkspaceSpec | None], Awaitable[None]]


class WorkspaceRegistry:
    def __init__(self, etcd: Etcd, prefix: str, parse: Parse, apply: Apply) -> None:
        self.etcd = etcd
        self.root = f"{prefix}/workspaces/"
        self.seeded_key = f"{prefix}/seeded"
        self.parse = parse
        self.apply = apply
        self.revision = 0  # the last revision applied
        self.known: dict[str, WorkspaceSpec] = {}

    def key(self, name: str) -> str:
        return self.root + name

    # ------------------------------------------------------------------------- start-up

    async def seed(self, configured: Iterable[WorkspaceSpec]) -> bool:
        """Write the configured workspaces if the cluster was never seeded; True if this did."""
        ops = [put_op(self.key(s.name), _encode(s.document())) for s in configured]
        ops.append(put_op(self.seeded_key, b"1"))
        result = await self.etcd.txn([Compare(self.seeded_key, "CREATE", 0)], ops)
        if result.succeeded:
            log.warning("seeded the cluster's workspaces from the configuration (%d)", len(ops) - 1)
        return result.succeeded

    async def load(self) -> dict[str, WorkspaceSpec]:
        """Every workspace in the store now (the malformed skipped); remembers the revision."""
        revision, kvs = await self.etcd.get_prefix(self.root)
        found: dict[str, WorkspaceSpec] = {}
        for kv in kvs:
            spec = self._read(kv)
            if spec is not None:
                found[spec.name] = spec
        self.revision = revision
        self.known = dict(found)
        return found

    def _read(self, kv: KeyValue) -> WorkspaceSpec | None:
        name = kv.key.removeprefix(self.root)
        try:
            return self.parse(name, json.loads(kv.value))
        except ValueError as exc:  # SettingError is one; json's decode error too
            problem = str(exc) if isinstance(exc, SettingError) else f"not JSON: {exc}"
            log.error(
                "skipping %s: %s",
                kv.key,
                problem,
                extra={"fields": {"event": "registry_skipped", "key": kv.key, "problem": problem}},
            )
            return None

    # --------------------------------------------------------------------------- follow

    async def follow(self) -> None:
        """Apply every change after the loaded revision, forever; a watch that ends (a member
        died, the store is away) resumes from the last revision applied."""
        await self.etcd.follow(
            self.root, lambda: self.revision, self._changed, self._resync, "the workspaces"
        )

    async def _changed(self, event: WatchEvent) -> None:
        kind, kv = event.kind, event.kv
        self.revision = max(self.revision, kv.mod_revision)
        name = kv.key.removeprefix(self.root)
        if kind == "delete":
            if self.known.pop(name, None) is not None:
                await self.apply(name, None)
            return
        spec = self._read(kv)
        if spec is None or self.known.get(name) == spec:
            return
        self.known[name] = spec
        await self.apply(name, spec)

    async def _resync(self) -> None:
        before = self.known
        now = await self.load()
        for name in before.keys() - now.keys():
            await self.apply(name, None)
        for name, spec in now.items():
            if before.get(name) != spec:
                await self.apply(name, spec)

    # ---------------------------------------------------------------------------- write

    async def put(self, name: str, document: Mapping[str, Any]) -> int:
        return await self.etcd.put(self.key(name), _encode(document))

    async def delete(self, name: str) -> int:
        return await self.etcd.delete(self.key(name))


def _encode(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
