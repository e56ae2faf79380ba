"""Pack files: many blobs in one object, so 10,000 small files do not become 10,000 uploads.

Blobs are appended to an in-memory pack; a full pack (about 16 MiB) goes to an uploader thread
through a queue of two, so memory stays bounded (one pack filling, at most three in flight) while
hashing, compression and uploading overlap. After every few packs an index object records where
each blob sits, so a run that dies mid-way leaves packs that the next run finds and does not
upload again.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from provisioning.snapshot.blobs import EncodedBlob, blob_id
from provisioning.snapshot.stores.base import ObjectStore

__all__ = ["BlobLocation", "PackWriter", "encode_index", "pack_name"]

PACK_TARGET_SIZE = 16 << 20
_INDEX_EVERY_PACKS = 16
_QUEUED_PACKS = 2


@dataclass(frozen=True, slots=True)
class BlobLocation:
    pack: str
    offset: int
    length: int
    raw_length: int
    codec: str


def pack_name(pack_id: str) -> str:
    return f"packs/{pack_id[:2]}/{pack_id}"


def encode_index(locations: dict[str, BlobLocation]) -> bytes:
    """Index object: for each pack, its blobs as [id, offset, length, raw length, codec]."""
    packs: dict[str, list[list[object]]] = {}
    for identity, where in sorted(locations.items()):
        packs.setdefault(where.pack, []).append(
            [identity, where.offset, where.length, where.raw_length, where.codec]
        )
    document = {"packs": [{"name": name, "blobs": blobs} for name, blobs in sorted(packs.items())]}
    return json.dumps(document, separators=(",", ":")).encode("ascii")


class _OpenPack:
    def __init__(self) -> None:
        self.data = bytearray()
        self.blobs: list[tuple[str, int, int, int, str]] = []


class PackWriter:
    """Thread-safe sink for blobs; ``add`` returns False for a blob that is already stored."""

    def __init__(
        self,
        store: ObjectStore,
        is_stored: Callable[[str], bool],
        pack_target_size: int = PACK_TARGET_SIZE,
    ) -> None:
        self._store = store
        self._is_stored = is_stored
        self._target = pack_target_size
        self._lock = threading.Lock()
        self._open = _OpenPack()
        self._pending: set[str] = set()
        self._unindexed: dict[str, BlobLocation] = {}
        self._indexed_packs = 0
        self.stored_locations: dict[str, BlobLocation] = {}
        self.stored_bytes = 0
        self._failure: BaseException | None = None
        self._aborted = False
        self._queue: queue.Queue[_OpenPack | None] = queue.Queue(maxsize=_QUEUED_PACKS)
        self._uploader = threading.Thread(target=self._upload_loop, name="snapshot-pack-upload")
        self._uploader.start()

    def knows(self, identity: str) -> bool:
        with self._lock:
            return identity in self._pending or self._is_stored(identity)

    def add(self, blob: EncodedBlob) -> bool:
        self._raise_failure()
        full: _OpenPack | None = None
        with self._lock:
            if blob.id in self._pending or self._is_stored(blob.id):
                return False
            self._pending.add(blob.id)
            pack = self._open
            pack.blobs.append(
                (blob.id, len(pack.data), len(blob.payload), blob.raw_length, blob.codec)
            )
            pack.data += blob.payload
            if len(pack.data) >= self._target:
                full, self._open = pack, _OpenPack()
        if full is not None:
            self._queue.put(full)
        return True

    def finish(self) -> dict[str, BlobLocation]:
        """Store the last pack and the index; returns where every new blob went."""
        with self._lock:
            last, self._open = self._open, _OpenPack()
        if last.blobs:
            self._queue.put(last)
        self._queue.put(None)
        self._uploader.join()
        self._raise_failure()
        self._write_index()
        return self.stored_locations

    def abort(self) -> None:
        """Stop the uploader without storing what is still open (the run failed)."""
        if self._uploader.is_alive():
            self._aborted = True
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._queue.put(None)
            self._uploader.join()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _upload_loop(self) -> None:
        while True:
            pack = self._queue.get()
            if pack is None:
                return
            if self._failure is not None or self._aborted:
                continue  # drain so that producers blocked on put() can see the failure
            try:
                self._store_pack(pack)
            except BaseException as exc:
                self._failure = exc

    def _store_pack(self, pack: _OpenPack) -> None:
        data = bytes(pack.data)
        name = pack_name(blob_id(data))
        self._store.put(name, data)
        with self._lock:
            for identity, offset, length, raw_length, codec in pack.blobs:
                where = BlobLocation(name, offset, length, raw_length, codec)
                self._unindexed[identity] = where
                self.stored_locations[identity] = where
            self.stored_bytes += len(data)
            self._indexed_packs += 1
            flush = self._indexed_packs % _INDEX_EVERY_PACKS == 0
        if flush:
            self._write_index()

    def _write_index(self) -> None:
        with self._lock:
            batch, self._unindexed = self._unindexed, {}
        if batch:
            data = encode_index(batch)
            self._store.put(f"index/{blob_id(data)}.json", data)
