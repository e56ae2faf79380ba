"""Pack files: many blobs in one object, so 10,000 small files do not become 10,000 uploads.

Blobs are copied into a pack buffer; a full pack (about 16 MiB) goes to an uploader thread and
the next blobs fill another buffer. There are three buffers, reused for the whole run: one
filling, one waiting, one being stored. That bounds memory whatever the tree size, lets hashing,
compression and uploading overlap, and keeps the copies in memory that is already mapped
(fresh multi-megabyte allocations cost a page fault per 4 KiB). After every few packs an index
object records where each blob sits, so a run that dies mid-way leaves packs that the next run
finds and does not upload again.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from provisioning.snapshot.blobs import EncodedBlob, blob_id
from provisioning.snapshot.stores.base import ObjectStore

__all__ = ["PACK_TARGET_SIZE", "BlobLocation", "PackWriter", "encode_index", "pack_name"]

PACK_TARGET_SIZE = 16 << 20
_BUFFER_SLACK = 4 << 20  # room for the blob that crosses the target (a chunk is at most 4 MiB)
_BUFFERS = 3
_INDEX_EVERY_PACKS = 16


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
    def __init__(self, buffer: bytearray) -> None:
        self.buffer = buffer
        self.size = 0
        self.blobs: list[tuple[str, int, int, int, str]] = []


class PackWriter:
    """Thread-safe sink for blobs; ``claim`` makes sure each new blob is stored exactly once."""

    def __init__(
        self,
        store: ObjectStore,
        is_stored: Callable[[str], bool],
        pack_target_size: int | None = None,
    ) -> None:
        self._store = store
        self._is_stored = is_stored
        self._target = pack_target_size or PACK_TARGET_SIZE
        # Three locks so that a producer waiting for a free buffer (holding _fill_lock) never
        # blocks the uploader, which only needs _index_lock to record what it stored.
        self._claim_lock = threading.Lock()
        self._fill_lock = threading.Lock()
        self._index_lock = threading.Lock()
        # Buffers are made when first needed (a small snapshot never pays for three), then reused.
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._buffers_made = 0
        self._open: _OpenPack | None = None
        self._pending: set[str] = set()
        self._unindexed: dict[str, BlobLocation] = {}
        self._packs_stored = 0
        self.stored_locations: dict[str, BlobLocation] = {}
        self.stored_bytes = 0
        self._failure: BaseException | None = None
        self._queue: queue.Queue[_OpenPack | None] = queue.Queue()
        self._uploader = threading.Thread(target=self._upload_loop, name="snapshot-pack-upload")
        self._uploader.start()

    def claim(self, identity: str) -> bool:
        """True when the caller is the one to store this blob (it is new and nobody else has it)."""
        with self._claim_lock:
            if identity in self._pending or self._is_stored(identity):
                return False
            self._pending.add(identity)
            return True

    def claim_many(self, identities: list[str]) -> list[bool]:
        """``claim`` for a batch of small files' blobs, under one lock acquisition."""
        claimed: list[bool] = []
        with self._claim_lock:
            pending, is_stored = self._pending, self._is_stored
            for identity in identities:
                new = identity not in pending and not is_stored(identity)
                if new:
                    pending.add(identity)
                claimed.append(new)
        return claimed

    def add(self, blob: EncodedBlob) -> bool:
        """Claim and store in one go; False when the blob is already stored or claimed."""
        if not self.claim(blob.id):
            return False
        self.store_claimed(blob)
        return True

    def store_claimed(self, blob: EncodedBlob) -> None:
        self._raise_failure()
        with self._fill_lock:
            self._append(blob)

    def store_many(self, blobs: list[EncodedBlob]) -> None:
        """``store_claimed`` for a batch, under one lock acquisition."""
        self._raise_failure()
        with self._fill_lock:
            for blob in blobs:
                self._append(blob)

    def _append(self, blob: EncodedBlob) -> None:
        payload = blob.payload
        pack = self._open
        if pack is None or pack.size + len(payload) > len(pack.buffer):
            if pack is not None:
                self._queue.put(pack)
            # Waiting for a free buffer while holding the lock is the back-pressure: every
            # producer stops until the uploader has stored a pack.
            pack = self._open = _OpenPack(self._take_buffer(len(payload)))
        pack.buffer[pack.size : pack.size + len(payload)] = payload
        pack.blobs.append((blob.id, pack.size, len(payload), blob.raw_length, blob.codec))
        pack.size += len(payload)
        if pack.size >= self._target:
            self._queue.put(pack)
            self._open = None

    def _take_buffer(self, at_least: int) -> bytearray:
        if self._free.empty() and self._buffers_made < _BUFFERS:
            self._buffers_made += 1
            return bytearray(max(self._target + _BUFFER_SLACK, at_least))
        buffer = self._free.get()
        if len(buffer) < at_least:  # a blob bigger than any chunk (another chunker's repo)
            buffer = bytearray(at_least)
        return buffer

    def finish(self) -> dict[str, BlobLocation]:
        """Store the last pack and the index; returns where every new blob went."""
        with self._fill_lock:
            last, self._open = self._open, None
        if last is not None and last.blobs:
            self._queue.put(last)
        self._queue.put(None)
        self._uploader.join()
        self._raise_failure()
        self._write_index()
        return self.stored_locations

    def abort(self) -> None:
        """Stop the uploader without storing the pack still open (the run failed).

        Packs already full and queued are stored and indexed first (at most two): a run that
        dies leaves every complete pack for the next run to reuse, however far the uploader had
        fallen behind the readers.
        """
        if self._uploader.is_alive():
            self._queue.put(None)
            self._uploader.join()
        if self._failure is None:
            # The run is failing already: its own error is the one to report.
            with contextlib.suppress(Exception):
                self._write_index()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _upload_loop(self) -> None:
        while True:
            pack = self._queue.get()
            if pack is None:
                return
            try:
                if self._failure is None:
                    self._store_pack(pack)
            except BaseException as exc:
                self._failure = exc
            finally:
                # Always give the buffer back, so that producers waiting for one see the failure.
                self._free.put(pack.buffer)

    def store_alone(self, blob: EncodedBlob) -> None:
        """Store a claimed blob as a pack of its own, now, from the caller's thread.

        For whole raw chunks on a local disk: written straight from the reader's buffer, without
        the copy into a pack buffer (420 MB of model weights: 0.1 s of CPU, holding the GIL).
        """
        self._raise_failure()
        payload = blob.payload
        self._record_pack(
            [(blob.id, 0, len(payload), blob.raw_length, blob.codec)], payload, len(payload)
        )

    def _store_pack(self, pack: _OpenPack) -> None:
        self._record_pack(pack.blobs, memoryview(pack.buffer)[: pack.size], pack.size)

    def _record_pack(
        self, blobs: list[tuple[str, int, int, int, str]], data: bytes | memoryview, size: int
    ) -> None:
        # A random name, not a hash of the pack: every blob in it is checked against its own id
        # on the way back, and hashing 16 MiB more per pack costs 5 % of a snapshot's CPU.
        name = pack_name(os.urandom(32).hex())
        self._store.put(name, data)
        with self._index_lock:
            for identity, offset, length, raw_length, codec in blobs:
                where = BlobLocation(name, offset, length, raw_length, codec)
                self._unindexed[identity] = where
                self.stored_locations[identity] = where
            self.stored_bytes += size
            self._packs_stored += 1
            flush = self._packs_stored % _INDEX_EVERY_PACKS == 0
        if flush:
            self._write_index()

    def _write_index(self) -> None:
        with self._index_lock:
            batch, self._unindexed = self._unindexed, {}
        if batch:
            data = encode_index(batch)
            self._store.put(f"index/{blob_id(data)}.json", data)
