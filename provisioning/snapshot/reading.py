"""Reading source files into blobs: small files in batches, big ones chunk by chunk.

A batch of small files costs one task, one claim and one pack-buffer lock for all of them; each
file is opened, read in one call (one byte more than the scan saw, so growth shows), fstat'ed and
closed, and its entry (from the scan) gets its hash in place when the fstat still matches the
scan. A file that changed between the scan and the end of its read is read again, up to
``retries`` times, then stored as last read and named in the snapshot's warnings.

Big files are cut into chunks (content-defined for compressible ones, every 4 MiB for the rest);
compressible chunks go to an encoder pool, so zstd runs on every core while reading goes on.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from provisioning.snapshot.blobs import (
    FIXED_CHUNK_SIZE,
    SAMPLE_SIZE,
    SMALL_FILE_LIMIT,
    ChunkerParams,
    EncodedBlob,
    blob_id,
    content_hash,
    encode_blob,
    file_chunks,
    fixed_chunks,
    looks_incompressible,
    raw_blob,
    sample_is_incompressible,
)
from provisioning.snapshot.manifest import Entry
from provisioning.snapshot.packs import PackWriter
from provisioning.snapshot.progress import TransferMeter

__all__ = ["BATCH_BYTES", "BATCH_FILES", "BatchOutcome", "FileReader", "ReadTask"]

# Small files go to the readers in groups: one task per file costs more than reading it.
BATCH_FILES = 64
BATCH_BYTES = 4 << 20

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC

# (position in the snapshot's entry list, the scan's entry, the file's absolute path)
ReadTask = list[tuple[int, Entry, bytes]]
Opener = Callable[[bytes, int], int]

_per_thread = threading.local()


def _fixed_buffer() -> bytearray:
    """A read buffer per reader thread, reused: fresh 4 MiB allocations cost page faults."""
    buffer: bytearray | None = getattr(_per_thread, "buffer", None)
    if buffer is None:
        buffer = _per_thread.buffer = bytearray(FIXED_CHUNK_SIZE)
    return buffer


@dataclass(slots=True)
class BatchOutcome:
    """What a task read; entries read cleanly were filled in place, the rest are listed here."""

    read_bytes: int = 0
    # Entries replaced by a re-read (a new Entry) or dropped (None: vanished or unreadable).
    replaced: list[tuple[int, Entry | None]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Read:
    """One read of one file: what it held and the file's stat around the read."""

    content_hash: str
    chunks: tuple[str, ...]
    length: int
    after: os.stat_result


class FileReader:
    """Reads files; chunks of big files are compressed and stored by a second pool meanwhile."""

    def __init__(
        self,
        opener: Opener,
        writer: PackWriter,
        chunker: ChunkerParams,
        *,
        level: int,
        threads: int,
        retries: int,
        progress: TransferMeter | None,
        direct: bool = False,
    ) -> None:
        # direct: the store writes a buffer without copying it first (a local disk), so whole
        # raw chunks skip the pack buffer; remote stores keep 16 MiB packs and async uploads.
        self.direct = direct
        self.opener = opener
        self.writer = writer
        self.chunker = chunker
        self.level = level
        self.retries = retries
        self.progress = progress
        self.encoders = ThreadPoolExecutor(threads, thread_name_prefix="snapshot-encode")
        # Bounds memory: at most this many chunks (4 MiB at most each) wait for an encoder.
        self._in_flight = threading.BoundedSemaphore(2 * threads)
        self._encodings: list[Future[None]] = []

    def close(self) -> None:
        """Wait for every chunk handed to the encoders; raises the first failure."""
        self.encoders.shutdown(wait=True)
        for encoding in self._encodings:
            encoding.result()

    def cancel(self) -> None:
        self.encoders.shutdown(wait=True, cancel_futures=True)

    def read_task(self, task: ReadTask) -> BatchOutcome:
        outcome = BatchOutcome()
        clean: list[tuple[Entry, bytes]] = []
        opener = self.opener
        for position, entry, path in task:
            if entry.size > SMALL_FILE_LIMIT:
                self._settle(position, entry, path, 0, 0, outcome)
                continue
            try:
                descriptor = opener(path, _OPEN_FLAGS)
                try:
                    # One byte more than the scan saw: a file that grew shows as a longer read.
                    data = os.read(descriptor, entry.size + 1)
                    after = os.fstat(descriptor)
                finally:
                    os.close(descriptor)
            except OSError as exc:
                outcome.replaced.append((position, None))
                outcome.warnings.append(_unreadable(entry, exc))
                continue
            outcome.read_bytes += len(data)
            if (
                len(data) == entry.size == after.st_size
                and after.st_mtime_ns == entry.mtime_ns
                and after.st_ctime_ns == entry.ctime_ns
                and after.st_ino == entry.inode
            ):
                clean.append((entry, data))
            else:  # changed since the scan: read again, as for a retry
                self._settle(position, entry, path, 1, len(data), outcome)
        if clean:
            self._store_small(clean)
        if self.progress is not None:
            self.progress.advance(sum(len(data) for _entry, data in clean), len(task))
        return outcome

    def _store_small(self, clean: list[tuple[Entry, bytes]]) -> None:
        identities = [blob_id(data) for _entry, data in clean]
        claimed = self.writer.claim_many(identities)
        blobs: list[EncodedBlob] = [
            encode_blob(data, self.level, identity)
            for (_entry, data), identity, new in zip(clean, identities, claimed, strict=True)
            if new
        ]
        if blobs:
            self.writer.store_many(blobs)
        for (entry, _data), identity in zip(clean, identities, strict=True):
            entry.hash = identity
            entry.chunks = (identity,)

    def _settle(
        self,
        position: int,
        entry: Entry,
        path: bytes,
        first_attempt: int,
        read_total: int,
        outcome: BatchOutcome,
    ) -> None:
        """Read until the file holds still (or retries run out); records the result."""
        # The version seen before opening (the scan's, then a fresh lstat for each retry) must
        # still be there after the last byte was read, else a writer was busy meanwhile.
        expected = (entry.size, entry.mtime_ns, entry.ctime_ns)
        settled: Entry | None = None
        for attempt in range(first_attempt, self.retries + 1):
            try:
                if attempt > 0:
                    now = os.lstat(path)
                    expected = (now.st_size, now.st_mtime_ns, now.st_ctime_ns)
                read = self._read_once(path)
            except OSError as exc:
                outcome.read_bytes += read_total
                outcome.replaced.append((position, None))
                outcome.warnings.append(_unreadable(entry, exc))
                return
            read_total += read.length
            after = read.after
            settled = Entry(
                path=entry.path,
                kind="file",
                mode=after.st_mode & 0o7777,
                mtime_ns=after.st_mtime_ns,
                uid=after.st_uid,
                gid=after.st_gid,
                size=read.length,
                hash=read.content_hash,
                chunks=read.chunks,
                inode=after.st_ino,
                ctime_ns=after.st_ctime_ns,
            )
            now_seen = (after.st_size, after.st_mtime_ns, after.st_ctime_ns)
            if (read.length, after.st_mtime_ns, after.st_ctime_ns) == expected == now_seen:
                break
        else:
            tries = self.retries + 1
            outcome.warnings.append(
                f"{entry.path}: changed while read {tries} times; stored as last read"
            )
        outcome.read_bytes += read_total
        outcome.replaced.append((position, settled))

    def _read_once(self, path: bytes) -> _Read:
        descriptor = self.opener(path, _OPEN_FLAGS)
        try:
            before = os.fstat(descriptor)
            if before.st_size <= SMALL_FILE_LIMIT:
                content_hash, chunks, length = self._read_small(descriptor, before.st_size)
            else:
                content_hash, chunks, length = self._read_big(descriptor, before.st_size)
            after = os.fstat(descriptor)
        finally:
            os.close(descriptor)
        return _Read(content_hash, chunks, length, after)

    def _read_small(self, descriptor: int, size: int) -> tuple[str, tuple[str, ...], int]:
        data = os.read(descriptor, size + 1)
        identity = blob_id(data)
        if self.writer.claim(identity):
            self.writer.store_claimed(encode_blob(data, self.level, identity))
        return identity, (identity,), len(data)

    def _read_big(self, descriptor: int, size: int) -> tuple[str, tuple[str, ...], int]:
        chunks: list[str] = []
        length = 0
        middle = os.pread(descriptor, SAMPLE_SIZE, max(0, size // 2 - SAMPLE_SIZE // 2))
        with io.FileIO(descriptor, "rb", closefd=False) as source:
            if sample_is_incompressible(middle, self.level):
                # Weights, archives, media: nobody inserts bytes into their middle, so fixed
                # chunks dedupe them as well as content-defined ones, without the 0.5 s of
                # CPU per GB that cutting costs; stored raw, straight from the read buffer.
                pieces = fixed_chunks(source.readinto, _fixed_buffer())
                compressible = False
            else:
                pieces = file_chunks(source.readinto, self.chunker)
                compressible = True
            for piece in pieces:
                identity = blob_id(piece)
                if not self.writer.claim(identity):
                    pass
                elif not compressible and self.direct and len(piece) == FIXED_CHUNK_SIZE:
                    # A whole 4 MiB raw chunk is a pack by itself, written from the read buffer.
                    self.writer.store_alone(raw_blob(piece, identity))
                elif not compressible or looks_incompressible(piece, self.level):
                    # From the read buffer into the pack's: one copy, no allocation.
                    self.writer.store_claimed(raw_blob(piece, identity))
                else:
                    self._hand_off(identity, bytes(piece))
                chunks.append(identity)
                length += len(piece)
                if self.progress is not None:
                    self.progress.advance(len(piece))
        return content_hash(chunks), tuple(chunks), length

    def _hand_off(self, identity: str, data: bytes) -> None:
        self._in_flight.acquire()
        try:
            encoding = self.encoders.submit(self._encode_and_store, identity, data)
        except BaseException:
            self._in_flight.release()
            raise
        self._encodings.append(encoding)

    def _encode_and_store(self, identity: str, data: bytes) -> None:
        try:
            # _read_big sampled this chunk before handing it over.
            self.writer.store_claimed(encode_blob(data, self.level, identity, sampled=True))
        finally:
            self._in_flight.release()


def _unreadable(entry: Entry, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"{entry.path}: vanished while snapshotting"
    return f"{entry.path}: unreadable ({exc.strerror})"
