"""The repository shape on any store (modelled on restic's)::

    config.json                         format version and chunker sizes
    packs/ab/<random id>                blobs back to back, zstd or raw, each named by its hash
    index/<blake3>.json                 which blob sits where, in which pack
    manifests/<blake3>.jsonl.zst        one JSON line per path of a tree
    snapshots/<time>-<id>.json          a snapshot: its manifest, source, counts

Blobs, index objects and manifests are named by their BLAKE3 hash, so nothing is ever overwritten
and everything read back can be checked.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import zstandard

from provisioning.snapshot.blobs import ChunkerParams, blob_id
from provisioning.snapshot.errors import (
    CorruptSnapshotError,
    DestinationError,
    UnknownSnapshotError,
)
from provisioning.snapshot.manifest import Entry, SnapshotRecord, decode_manifest, encode_manifest
from provisioning.snapshot.packs import BlobLocation
from provisioning.snapshot.stores.base import ObjectStore

__all__ = ["Repository"]

_FORMAT_VERSION = 1
_CONFIG = "config.json"
_PARALLEL_SMALL_READS = 8


class Repository:
    """Reads and writes the repository's small objects; packs are written by PackWriter."""

    def __init__(self, store: ObjectStore, chunker: ChunkerParams) -> None:
        self.store = store
        self.chunker = chunker

    @classmethod
    def open(cls, store: ObjectStore, *, create: bool) -> Repository:
        if _CONFIG in store.list(_CONFIG):
            try:
                config = json.loads(store.get(_CONFIG))
                sizes = config["chunker"]
                if config["version"] != _FORMAT_VERSION:
                    raise DestinationError(
                        f"{store.describe()}: repository format {config['version']} is not "
                        f"{_FORMAT_VERSION}"
                    )
                return cls(
                    store, ChunkerParams(sizes["average"], sizes["minimum"], sizes["maximum"])
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise DestinationError(f"{store.describe()}: unreadable {_CONFIG}") from exc
        if not create:
            raise DestinationError(f"{store.describe()} holds no snapshot repository")
        chunker = ChunkerParams()
        config = {
            "version": _FORMAT_VERSION,
            "hash": "blake3",
            "chunker": {
                "average": chunker.average,
                "minimum": chunker.minimum,
                "maximum": chunker.maximum,
            },
        }
        store.put(_CONFIG, json.dumps(config, indent=1).encode("ascii"))
        return cls(store, chunker)

    def _get_many(self, names: list[str]) -> list[bytes]:
        with ThreadPoolExecutor(_PARALLEL_SMALL_READS, thread_name_prefix="snapshot-get") as pool:
            return list(pool.map(self.store.get, names))

    def index_names(self) -> list[str]:
        return self.store.list("index/")

    def load_index(self) -> dict[str, BlobLocation]:
        """Where each stored blob is; a blob stored twice (an interrupted prune) keeps one."""
        locations: dict[str, BlobLocation] = {}
        names = self.index_names()
        for name, data in zip(names, self._get_many(names), strict=True):
            if blob_id(data) != name.removeprefix("index/").removesuffix(".json"):
                raise DestinationError(f"{self.store.describe()}: index object {name} is corrupt")
            for pack in json.loads(data)["packs"]:
                for identity, offset, length, raw_length, codec in pack["blobs"]:
                    locations[identity] = BlobLocation(
                        pack["name"], offset, length, raw_length, codec
                    )
        return locations

    def snapshots(self) -> list[SnapshotRecord]:
        """Every snapshot, oldest first."""
        names = self.store.list("snapshots/")
        records = [SnapshotRecord.from_bytes(data) for data in self._get_many(names)]
        return sorted(records, key=lambda record: (record.time, record.id))

    def find_snapshot(self, wanted: str, source: str | None = None) -> SnapshotRecord:
        """A snapshot by id, unique id prefix, or "latest" (optionally of one source path)."""
        records = self.snapshots()
        if wanted == "latest":
            candidates = [r for r in records if source is None or r.source == source]
            if not candidates:
                where = f" of {source}" if source else ""
                raise UnknownSnapshotError(f"no snapshot{where} in {self.store.describe()}")
            return candidates[-1]
        matches = [r for r in records if r.id == wanted] or [
            r for r in records if r.id.startswith(wanted)
        ]
        if len(matches) != 1:
            problem = "is ambiguous" if matches else "does not exist"
            raise UnknownSnapshotError(f"snapshot {wanted!r} {problem} in {self.store.describe()}")
        return matches[0]

    def save_manifest(self, entries: list[Entry]) -> tuple[str, str]:
        """Stores the manifest compressed; returns (object name, hash of the plain manifest)."""
        plain = encode_manifest(entries)
        digest = blob_id(plain)
        name = f"manifests/{digest}.jsonl.zst"
        self.store.put(name, zstandard.ZstdCompressor(level=3).compress(plain))
        return name, digest

    def load_manifest(self, record: SnapshotRecord) -> list[Entry]:
        try:
            stored = self.store.get(record.manifest)
            plain = zstandard.ZstdDecompressor().decompress(stored)
        except (DestinationError, zstandard.ZstdError) as exc:
            raise CorruptSnapshotError(
                f"manifest of snapshot {record.id} is missing or unreadable", []
            ) from exc
        if blob_id(plain) != record.manifest_hash:
            raise CorruptSnapshotError(f"manifest of snapshot {record.id} is corrupt", [])
        return decode_manifest(plain)

    def save_snapshot(self, record: SnapshotRecord) -> None:
        self.store.put(snapshot_name(record.id), record.to_bytes())


def snapshot_name(snapshot_id: str) -> str:
    return f"snapshots/{snapshot_id}.json"
