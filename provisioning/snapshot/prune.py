"""Pruning: keep the N latest snapshots and free every byte that no kept snapshot needs.

Packs whose blobs are all unneeded are deleted; packs holding some needed blobs are repacked (the
needed blobs copied into new packs) so that nothing unneeded stays. Order matters for a crash at
any step: new packs, then a complete new index, then old index objects, snapshot records,
manifests and packs are deleted. A crash leaves at worst unreferenced objects that the next prune
removes, never a kept snapshot with missing data. Prune assumes no create runs at the same time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from provisioning.snapshot.blobs import Codec, EncodedBlob, blob_id
from provisioning.snapshot.errors import CorruptSnapshotError, SnapshotError
from provisioning.snapshot.packs import BlobLocation, PackWriter, encode_index
from provisioning.snapshot.repository import Repository, snapshot_name
from provisioning.snapshot.stores.base import ObjectStore

__all__ = ["PruneResult", "prune_snapshots"]


@dataclass(frozen=True, slots=True)
class PruneResult:
    kept: list[str]
    removed: list[str]
    deleted_packs: int
    repacked_packs: int
    freed_bytes: int


def _pack_sizes(index: dict[str, BlobLocation]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for where in index.values():
        sizes[where.pack] = max(sizes.get(where.pack, 0), where.offset + where.length)
    return sizes


def _needed_blobs(repo: Repository, keep: list[str]) -> tuple[set[str], set[str]]:
    records = {record.id: record for record in repo.snapshots()}
    needed: set[str] = set()
    manifests: set[str] = set()
    for snapshot_id in keep:
        record = records[snapshot_id]
        manifests.add(record.manifest)
        for entry in repo.load_manifest(record):
            needed.update(entry.chunks)
    return needed, manifests


def _repack(
    store: ObjectStore,
    index: dict[str, BlobLocation],
    pack: str,
    needed: set[str],
    writer: PackWriter,
) -> None:
    """Copy the needed blobs of ``pack`` as they are (no recompression) into new packs."""
    data = store.get(pack)
    for identity, where in index.items():
        if where.pack != pack or identity not in needed:
            continue
        payload = data[where.offset : where.offset + where.length]
        if len(payload) != where.length:
            raise CorruptSnapshotError(f"pack {pack} is truncated; prune stopped", [])
        writer.add(EncodedBlob(identity, where.raw_length, cast(Codec, where.codec), payload))


def prune_snapshots(store: ObjectStore, keep: int) -> PruneResult:
    """Keep the ``keep`` latest snapshots (by time) and delete what only the others needed."""
    if keep < 1:
        raise SnapshotError(f"prune must keep at least 1 snapshot, not {keep}")
    repo = Repository.open(store, create=False)
    records = repo.snapshots()
    kept = [record.id for record in records[-keep:]]
    removed = [record.id for record in records[:-keep]]
    needed, kept_manifests = _needed_blobs(repo, kept)
    index = repo.load_index()
    sizes = _pack_sizes(index)
    blobs_by_pack: dict[str, list[str]] = {}
    for identity, where in index.items():
        blobs_by_pack.setdefault(where.pack, []).append(identity)
    unused_packs = [p for p, blobs in blobs_by_pack.items() if not needed.intersection(blobs)]
    mixed_packs = [
        pack
        for pack, blobs in blobs_by_pack.items()
        if needed.intersection(blobs) and not needed.issuperset(blobs)
    ]
    # Packs no index mentions were left by an interrupted create; nothing can reach them.
    orphan_packs = sorted(set(store.list("packs/")) - set(blobs_by_pack))

    writer = PackWriter(store, lambda _identity: False)
    try:
        for pack in mixed_packs:
            _repack(store, index, pack, needed, writer)
        moved = writer.finish()
    except BaseException:
        writer.abort()
        raise
    mixed = set(mixed_packs)
    survivors = {
        identity: where
        for identity, where in index.items()
        if identity in needed and where.pack not in mixed
    } | moved
    new_index = encode_index(survivors)
    new_index_name = f"index/{blob_id(new_index)}.json"
    store.put(new_index_name, new_index)
    # The old index objects and the ones the repacking writer wrote: the new one covers both.
    store.delete(name for name in store.list("index/") if name != new_index_name)
    store.delete(snapshot_name(snapshot_id) for snapshot_id in removed)
    store.delete(m for m in store.list("manifests/") if m not in kept_manifests)
    doomed = unused_packs + mixed_packs + orphan_packs
    store.delete(doomed)
    freed = sum(sizes.get(pack, 0) for pack in unused_packs + mixed_packs) - writer.stored_bytes
    return PruneResult(
        kept, removed, len(unused_packs) + len(orphan_packs), len(mixed_packs), freed
    )
