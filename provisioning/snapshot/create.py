"""Taking a snapshot: scan the tree, store the content that is new, write manifest and record.

Files are read by a thread pool (reading.py; hashing, chunking and zstd all release the GIL) while
the tree is still being listed: each directory's files are handed over as soon as it is scanned,
small ones in batches. A file whose size, mtime and ctime differ between the scan (or the stat
before a retry) and the end of reading changed under us and is read again, up to ``retries``
times, then stored as last read and named in the snapshot's warnings.
A file that looks unchanged since the parent snapshot (same size, mtime, ctime, inode) is not
read at all; everything else is compared by content, so only new chunks are stored.
"""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from provisioning.snapshot.blobs import SMALL_FILE_LIMIT, blob_id
from provisioning.snapshot.errors import SourceMissingError, UnknownSnapshotError
from provisioning.snapshot.manifest import Entry, SnapshotRecord
from provisioning.snapshot.packs import BlobLocation, PackWriter
from provisioning.snapshot.progress import TransferMeter
from provisioning.snapshot.reading import (
    BATCH_BYTES,
    BATCH_FILES,
    BatchOutcome,
    FileReader,
    ReadTask,
)
from provisioning.snapshot.repository import Repository
from provisioning.snapshot.scan import walk_tree
from provisioning.snapshot.stores.base import ObjectStore
from provisioning.snapshot.stores.local import LocalStore

__all__ = ["CreateOptions", "CreateResult", "create_snapshot", "default_threads"]

# The one seam the "file changes while read" tests use; everything else is the real thing.
open_source_file = os.open


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
    progress: TransferMeter | None = None


@dataclass(frozen=True, slots=True)
class CreateResult:
    snapshot: SnapshotRecord
    read_bytes: int
    stored_bytes: int
    reused_files: int
    seconds: float


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


def _open_source_file(path: bytes, flags: int) -> int:
    return open_source_file(path, flags)  # looked up per call, so that tests can replace it


class _Dispatcher:
    """Hands files to the readers while the scan goes on: small ones in batches, big ones alone.

    Small and big files have readers of their own: small files cost Python time per file
    (holding the GIL), big ones cost hashing, copying and zstd (which release it), so reading
    both at once keeps both cores busy instead of doing the small files after the big ones.
    """

    def __init__(
        self, big: ThreadPoolExecutor, small: ThreadPoolExecutor, reader: FileReader
    ) -> None:
        self.big = big
        self.small = small
        self.reader = reader
        self.tasks: list[Future[BatchOutcome]] = []
        self.files = 0
        self.bytes = 0
        self._batch: ReadTask = []
        self._batch_bytes = 0

    def add(self, position: int, entry: Entry, path: bytes) -> None:
        self.files += 1
        self.bytes += entry.size
        if entry.size > SMALL_FILE_LIMIT:
            self.tasks.append(self.big.submit(self.reader.read_task, [(position, entry, path)]))
            return
        self._batch.append((position, entry, path))
        self._batch_bytes += entry.size
        if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._batch:
            self.tasks.append(self.small.submit(self.reader.read_task, self._batch))
            self._batch, self._batch_bytes = [], 0


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

    progress = options.progress
    if progress is not None:
        progress.start()
    writer = PackWriter(store, index.__contains__)
    reader = FileReader(
        _open_source_file,
        writer,
        repo.chunker,
        level=options.level,
        threads=options.threads,
        retries=options.retries,
        progress=progress,
        direct=isinstance(store, LocalStore),
    )
    entries: list[Entry] = []
    skipped: list[str] = []
    warnings: list[str] = []
    read_bytes = 0
    reused = 0
    dropped: set[int] = set()
    big = ThreadPoolExecutor(options.threads, thread_name_prefix="snapshot-read-big")
    small = ThreadPoolExecutor(options.threads, thread_name_prefix="snapshot-read-small")
    pools = (big, small)
    try:
        dispatcher = _Dispatcher(big, small, reader)
        # Reading starts with the first directory listed, not after the whole tree is.
        for found in walk_tree(source, excludes, skipped):
            for entry, path in found:
                position = len(entries)
                entries.append(entry)
                if entry.kind != "file":
                    continue
                earlier = previous.get(entry.path) if previous else None
                if earlier is not None and _looks_unchanged(entry, earlier, index):
                    entry.hash, entry.chunks = earlier.hash, earlier.chunks
                    reused += 1
                else:
                    dispatcher.add(position, entry, path)
            if progress is not None:
                progress.set_totals(dispatcher.bytes, dispatcher.files)
        dispatcher.flush()
        for task in dispatcher.tasks:
            outcome = task.result()
            read_bytes += outcome.read_bytes
            warnings.extend(outcome.warnings)
            for position, replacement in outcome.replaced:
                if replacement is None:
                    dropped.add(position)
                else:
                    entries[position] = replacement
        for pool in pools:
            pool.shutdown(wait=True)
        reader.close()
        writer.finish()
    except BaseException:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
        reader.cancel()
        writer.abort()
        raise
    finally:
        if progress is not None:
            progress.stop()
    warnings[:0] = [f"{path}: skipped (socket, FIFO or device)" for path in skipped]
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
