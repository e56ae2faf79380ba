"""Taking a snapshot: scan the tree, store the content that is new, write manifest and record.

Files are read by a thread pool (hashing, chunking and zstd all release the GIL); a file whose
size, mtime and ctime differ between the stat before opening it and the end of reading changed
under us and is read again, up to ``retries`` times, then stored as last read and named in the
snapshot's warnings.
A file that looks unchanged since the parent snapshot (same size, mtime, ctime, inode) is not
read at all; everything else is compared by content, so only new chunks are stored.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from provisioning.snapshot.blobs import (
    FIXED_CHUNK_SIZE,
    SAMPLE_SIZE,
    SMALL_FILE_LIMIT,
    blob_id,
    content_hash,
    encode_blob,
    file_chunks,
    fixed_chunks,
    looks_incompressible,
    raw_blob,
    sample_is_incompressible,
)
from provisioning.snapshot.errors import SourceMissingError, UnknownSnapshotError
from provisioning.snapshot.manifest import Entry, SnapshotRecord
from provisioning.snapshot.packs import BlobLocation, PackWriter
from provisioning.snapshot.progress import Progress
from provisioning.snapshot.repository import Repository
from provisioning.snapshot.scan import scan_tree
from provisioning.snapshot.stores.base import ObjectStore
from provisioning.snapshot.stores.local import LocalStore

__all__ = ["CreateOptions", "CreateResult", "create_snapshot", "default_threads"]

# The one seam the "file changes while read" tests use; everything else is the real thing.
open_source_file = os.open


_per_thread = threading.local()


def _fixed_buffer() -> bytearray:
    """A read buffer per reader thread, reused: fresh 4 MiB allocations cost page faults."""
    buffer: bytearray | None = getattr(_per_thread, "buffer", None)
    if buffer is None:
        buffer = _per_thread.buffer = bytearray(FIXED_CHUNK_SIZE)
    return buffer


def default_threads() -> int:
    return max(2, os.cpu_count() or 2)


@dataclass(frozen=True, slots=True)
class CreateOptions:
    excludes: tuple[str, ...] = ()
    level: int = 1
    threads: int = field(default_factory=default_threads)
    # A snapshot id whose unchanged files need not be read; None picks the latest snapshot of
    # the same source on this host, "" disables the shortcut (same as rehash).
    parent: str | None = None
    rehash: bool = False
    retries: int = 3
    progress: Progress | None = None


@dataclass(frozen=True, slots=True)
class CreateResult:
    snapshot: SnapshotRecord
    read_bytes: int
    stored_bytes: int
    reused_files: int
    seconds: float


@dataclass(slots=True)
class _FileOutcome:
    entry: Entry | None
    read_bytes: int
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class _Read:
    """One read of one file: what it held and the file's stat around the read."""

    content_hash: str
    chunks: tuple[str, ...]
    length: int
    after: os.stat_result


_BATCH_FILES = 64
_BATCH_BYTES = 4 << 20


def _batches(entries: list[Entry], positions: list[int]) -> list[list[int]]:
    """Small files in groups (one task per file costs more than reading it); big ones alone."""
    batches: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for position in positions:
        size = entries[position].size
        if size > SMALL_FILE_LIMIT:
            batches.append([position])
            continue
        if len(current) >= _BATCH_FILES or current_bytes + size > _BATCH_BYTES:
            batches.append(current)
            current, current_bytes = [], 0
        current.append(position)
        current_bytes += size
    if current:
        batches.append(current)
    return batches


class _Snapshotter:
    """Reads files; chunks of big files are compressed and stored by a second pool meanwhile."""

    def __init__(self, source: Path, options: CreateOptions, writer: PackWriter, repo: Repository):
        self.source = os.fsencode(source)
        self.options = options
        self.writer = writer
        self.repo = repo
        self.encoders = ThreadPoolExecutor(options.threads, thread_name_prefix="snapshot-encode")
        # Bounds memory: at most this many chunks (4 MiB at most each) wait for an encoder.
        self._in_flight = threading.BoundedSemaphore(2 * options.threads)
        self._encodings: list[Future[None]] = []

    def close(self) -> None:
        """Wait for every chunk handed to the encoders; raises the first failure."""
        self.encoders.shutdown(wait=True)
        for encoding in self._encodings:
            encoding.result()

    def store_batch(self, batch: list[Entry]) -> list[_FileOutcome]:
        outcomes = [self.store_file(entry) for entry in batch]
        if self.options.progress is not None:
            self.options.progress.advance(0, len(batch))
        return outcomes

    def store_file(self, entry: Entry) -> _FileOutcome:
        path = os.path.join(self.source, os.fsencode(entry.path))
        read_total = 0
        # The version seen before opening (the scan's, then a fresh lstat for each retry) must
        # still be there after the last byte was read, else a writer was busy meanwhile.
        expected = (entry.size, entry.mtime_ns, entry.ctime_ns)
        for attempt in range(self.options.retries + 1):
            try:
                if attempt > 0:
                    now = os.lstat(path)
                    expected = (now.st_size, now.st_mtime_ns, now.st_ctime_ns)
                read = self._read_once(path)
            except FileNotFoundError:
                return _FileOutcome(None, read_total, f"{entry.path}: vanished while snapshotting")
            except OSError as exc:
                return _FileOutcome(None, read_total, f"{entry.path}: unreadable ({exc.strerror})")
            read_total += read.length
            after = read.after
            entry = Entry(
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
            if (
                (read.length, after.st_mtime_ns, after.st_ctime_ns)
                == expected
                == (
                    after.st_size,
                    after.st_mtime_ns,
                    after.st_ctime_ns,
                )
            ):
                return _FileOutcome(entry, read_total)
        tries = self.options.retries + 1
        return _FileOutcome(
            entry,
            read_total,
            f"{entry.path}: changed while read {tries} times; stored as last read",
        )

    def _read_once(self, path: bytes) -> _Read:
        descriptor = open_source_file(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
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
        # One byte more than stat said: a file that grew meanwhile shows as a length mismatch.
        data = os.read(descriptor, size + 1)
        identity = blob_id(data)
        if self.writer.claim(identity):
            self.writer.store_claimed(encode_blob(data, self.options.level, identity))
        if self.options.progress is not None:
            self.options.progress.advance(len(data))
        return identity, (identity,), len(data)

    def _read_big(self, descriptor: int, size: int) -> tuple[str, tuple[str, ...], int]:
        chunks: list[str] = []
        length = 0
        middle = os.pread(descriptor, SAMPLE_SIZE, max(0, size // 2 - SAMPLE_SIZE // 2))
        with io.FileIO(descriptor, "rb", closefd=False) as source:
            if sample_is_incompressible(middle, self.options.level):
                # Weights, archives, media: nobody inserts bytes into their middle, so fixed
                # chunks dedupe them as well as content-defined ones, without the 0.5 s of
                # CPU per GB that cutting costs; stored raw, straight from the read buffer.
                pieces = fixed_chunks(source.readinto, _fixed_buffer())
                compressible = False
            else:
                pieces = file_chunks(source.readinto, self.repo.chunker)
                compressible = True
            for piece in pieces:
                identity = blob_id(piece)
                if not self.writer.claim(identity):
                    pass
                elif not compressible or looks_incompressible(piece, self.options.level):
                    # From the read buffer into the pack's: one copy, no allocation.
                    self.writer.store_claimed(raw_blob(piece, identity))
                else:
                    self._hand_off(identity, bytes(piece))
                chunks.append(identity)
                length += len(piece)
                if self.options.progress is not None:
                    self.options.progress.advance(len(piece))
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
            self.writer.store_claimed(encode_blob(data, self.options.level, identity))
        finally:
            self._in_flight.release()


def _looks_unchanged(entry: Entry, previous: Entry | None, index: dict[str, BlobLocation]) -> bool:
    return (
        previous is not None
        and previous.kind == "file"
        and (previous.size, previous.mtime_ns, previous.ctime_ns, previous.inode)
        == (entry.size, entry.mtime_ns, entry.ctime_ns, entry.inode)
        and all(chunk in index for chunk in previous.chunks)
    )


def _parent_entries(
    repo: Repository, source: str, options: CreateOptions
) -> tuple[str | None, dict[str, Entry]]:
    if options.rehash or options.parent == "":
        return None, {}
    try:
        if options.parent is not None:
            parent = repo.find_snapshot(options.parent)
        else:
            host = socket.gethostname()
            mine = [r for r in repo.snapshots() if r.source == source and r.host == host]
            if not mine:
                return None, {}
            parent = mine[-1]
    except UnknownSnapshotError:
        if options.parent is not None:
            raise
        return None, {}
    entries = repo.load_manifest(parent)
    return parent.id, {entry.path: entry for entry in entries if entry.kind == "file"}


def _repository_excludes(source: Path, store: ObjectStore) -> list[str]:
    """A local repository inside the source tree must not snapshot itself."""
    if isinstance(store, LocalStore):
        repo_root = store.root.resolve()
        if repo_root.is_relative_to(source) and repo_root != source:
            return [f"/{repo_root.relative_to(source).as_posix()}"]
    return []


def create_snapshot(
    source: Path, store: ObjectStore, options: CreateOptions | None = None
) -> CreateResult:
    """Snapshot ``source`` into the repository on ``store`` (created on first use)."""
    options = options or CreateOptions()
    started = time.monotonic()
    if not source.is_dir():
        problem = "is not a directory" if source.exists() else "does not exist"
        raise SourceMissingError(f"snapshot source {source} {problem}")
    source = source.resolve()
    store.check_writable()
    repo = Repository.open(store, create=True)
    index = repo.load_index()
    parent_id, previous = _parent_entries(repo, str(source), options)
    excludes = [*options.excludes, *_repository_excludes(source, store)]
    scan = scan_tree(source, excludes)

    entries = list(scan.entries)
    to_read: list[int] = []
    reused = 0
    for position, entry in enumerate(entries):
        if entry.kind != "file":
            continue
        earlier = previous.get(entry.path)
        if earlier is not None and _looks_unchanged(entry, earlier, index):
            entries[position] = entry.with_content(earlier.hash, earlier.chunks)
            reused += 1
        else:
            to_read.append(position)

    progress = options.progress
    if progress is not None:
        progress.set_totals(sum(entries[i].size for i in to_read), len(to_read))
        progress.start()
    writer = PackWriter(store, index.__contains__)
    warnings = [f"{path}: skipped (socket, FIFO or device)" for path in scan.skipped]
    read_bytes = 0
    dropped: set[int] = set()
    snapshotter = _Snapshotter(source, options, writer, repo)
    try:
        with ThreadPoolExecutor(options.threads, thread_name_prefix="snapshot-read") as pool:
            batches = _batches(entries, to_read)
            results = pool.map(snapshotter.store_batch, ([entries[i] for i in b] for b in batches))
            for batch, outcomes in zip(batches, results, strict=True):
                for position, outcome in zip(batch, outcomes, strict=True):
                    read_bytes += outcome.read_bytes
                    if outcome.warning:
                        warnings.append(outcome.warning)
                    if outcome.entry is None:
                        dropped.add(position)
                    else:
                        entries[position] = outcome.entry
        snapshotter.close()
        writer.finish()
    except BaseException:
        snapshotter.encoders.shutdown(wait=True, cancel_futures=True)
        writer.abort()
        raise
    finally:
        if progress is not None:
            progress.stop()
    kept = [entry for position, entry in enumerate(entries) if position not in dropped]
    # A hard link whose first path vanished would have nothing to link to on restore.
    gone = {entries[position].path for position in dropped}
    kept = [entry for entry in kept if not (entry.kind == "hardlink" and entry.target in gone)]
    record = _record(repo, kept, str(source), parent_id, excludes, warnings, writer.stored_bytes)
    repo.save_snapshot(record)
    return CreateResult(record, read_bytes, writer.stored_bytes, reused, time.monotonic() - started)


def _record(
    repo: Repository,
    entries: list[Entry],
    source: str,
    parent_id: str | None,
    excludes: list[str],
    warnings: list[str],
    added_bytes: int,
) -> SnapshotRecord:
    manifest_name, manifest_hash = repo.save_manifest(entries)
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    suffix = blob_id(f"{manifest_hash}{stamp}".encode())[:8]
    files = [entry for entry in entries if entry.kind == "file"]
    return SnapshotRecord(
        id=f"{now:%Y%m%dT%H%M%S}Z-{suffix}",
        time=stamp,
        source=source,
        host=socket.gethostname(),
        manifest=manifest_name,
        manifest_hash=manifest_hash,
        parent=parent_id,
        files=len(files),
        dirs=sum(1 for entry in entries if entry.kind == "dir"),
        size=sum(entry.size for entry in files),
        added_bytes=added_bytes,
        excludes=excludes,
        warnings=warnings,
    )
