"""Restoring a snapshot: recreate the tree exactly, checking every byte against its hash.

Work goes pack by pack (as restic's restorer does): each pack is streamed once, front to back, and
each blob in it is decompressed, checked against its BLAKE3 id and written at every place it
belongs (one blob can fill many files). A file of one blob is handed, in batches, to a pool of
writers that create it with its content, mode, owner and mtime in one go (writing.py), so the
system calls of many small files overlap; a chunk of a bigger file is written with pwrite, and such
files and directories get their metadata at the end. All-zero blobs are not written, so sparse
files come back sparse. Each file's chunk list is checked against the file's hash first. A blob
that is missing, truncated or does not match its id is reported with every file it affects; those
files are removed (or never created), never left behind with wrong content.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from provisioning.snapshot.blobs import blob_id, content_hash, decode_blob
from provisioning.snapshot.create import default_threads
from provisioning.snapshot.errors import (
    CorruptSnapshotError,
    DestinationError,
    RestoreTargetError,
    TargetNotEmptyError,
)
from provisioning.snapshot.manifest import Entry, SnapshotRecord
from provisioning.snapshot.packs import BlobLocation
from provisioning.snapshot.progress import TransferMeter
from provisioning.snapshot.repository import Repository
from provisioning.snapshot.stores.base import ObjectStore, ReadStream, skip_bytes
from provisioning.snapshot.writing import Ownership, is_zero, write_at, write_whole_file

__all__ = ["RestoreResult", "restore_snapshot"]


@dataclass(frozen=True, slots=True)
class RestoreResult:
    snapshot: SnapshotRecord
    files: int
    bytes: int
    seconds: float


@dataclass(slots=True)
class _Piece:
    """One blob to read from a pack: the whole files it is, and the (file, offset) it fills."""

    blob: str
    where: BlobLocation
    files: list[tuple[bytes, Entry]] = field(default_factory=list)
    targets: list[tuple[bytes, int]] = field(default_factory=list)


_per_thread = threading.local()
_BUFFERED_READ = 1 << 20


def _read_payload(stream: ReadStream, piece: _Piece) -> bytes | memoryview:
    """A blob's stored bytes. A big raw chunk of bigger files (model weights) is read into a
    buffer the thread reuses: a fresh 4 MiB bytes object per chunk costs a page fault per 4 KiB.
    Blobs that whole files are made of are handed to the writers, so they get their own bytes."""
    length = piece.where.length
    readinto = getattr(stream, "readinto", None)
    if piece.where.codec != "raw" or piece.files or length < _BUFFERED_READ or readinto is None:
        return stream.read(length)
    buffer: bytearray | None = getattr(_per_thread, "buffer", None)
    if buffer is None or len(buffer) < length:
        buffer = _per_thread.buffer = bytearray(length)
    view = memoryview(buffer)[:length]
    filled = 0
    while filled < length:
        count = readinto(view[filled:])
        if not count:
            break
        filled += count
    return view[:filled]


def _safe_relative(path: str) -> bool:
    # The components PurePosixPath(path).parts would give, without building a path per entry.
    parts = [part for part in path.split("/") if part and part != "."]
    return bool(parts) and not path.startswith("/") and ".." not in parts


def _written_whole(entry: Entry) -> bool:
    """A file of one blob is created, written and given its metadata in one go."""
    return entry.kind == "file" and len(entry.chunks) == 1


# Whole files go to the writers in batches: one task per file costs more than writing it.
_BATCH_FILES = 64
_BATCH_BYTES = 4 << 20
_Batch = list[tuple[bytes, list[tuple[bytes, Entry]]]]


class _Restorer:
    def __init__(self, target: Path, threads: int, progress: TransferMeter | None) -> None:
        self.target = os.fsencode(target)
        self.prefix = self.target.rstrip(b"/") + b"/"
        self.threads = threads
        self.progress = progress
        self.bad_blobs: set[str] = set()
        self.ownership = Ownership(False, 0, None, None)
        # One queue per writer, and a directory's files to one writer: creating files in one
        # directory from two threads makes both spin on the directory's lock.
        self.writers = [
            ThreadPoolExecutor(1, thread_name_prefix=f"snapshot-write-{number}")
            for number in range(threads)
        ]
        # Bounds memory: at most this many batches (4 MiB at most each) wait for a writer.
        self._in_flight = threading.BoundedSemaphore(2 * threads)
        self._writes: list[Future[None]] = []

    def path(self, relative: str) -> bytes:
        return self.prefix + os.fsencode(relative)

    def plan(
        self, files: list[Entry], index: dict[str, BlobLocation]
    ) -> tuple[dict[str, list[_Piece]], set[str]]:
        """Pieces grouped by pack, and the files whose chunks the index does not know."""
        by_pack: dict[str, dict[str, _Piece]] = {}
        unknown: set[str] = set()
        for entry in files:
            if _written_whole(entry):
                where = index.get(entry.chunks[0])
                if where is None or where.raw_length != entry.size:
                    unknown.add(entry.path)
                    continue
                pieces = by_pack.setdefault(where.pack, {})
                chunk = entry.chunks[0]
                piece = pieces.get(chunk)
                if piece is None:
                    piece = pieces[chunk] = _Piece(chunk, where)
                piece.files.append((self.path(entry.path), entry))
                continue
            offset = 0
            for chunk in entry.chunks:
                where = index.get(chunk)
                if where is None:
                    unknown.add(entry.path)
                    break
                pieces = by_pack.setdefault(where.pack, {})
                piece = pieces.setdefault(chunk, _Piece(chunk, where))
                piece.targets.append((self.path(entry.path), offset))
                offset += where.raw_length
            else:
                if offset != entry.size:
                    unknown.add(entry.path)
        ordered = {
            pack: sorted(pieces.values(), key=lambda piece: piece.where.offset)
            for pack, pieces in sorted(by_pack.items())
        }
        return ordered, unknown

    def restore_pack(self, store: ObjectStore, pack: str, pieces: list[_Piece]) -> None:
        position = 0
        batch: _Batch = []
        batch_bytes = 0
        try:
            with store.open_stream(pack) as stream:
                for number, piece in enumerate(pieces):
                    skip_bytes(stream, piece.where.offset - position)
                    payload = _read_payload(stream, piece)
                    position = piece.where.offset + len(payload)
                    if len(payload) != piece.where.length:
                        self.bad_blobs.update(p.blob for p in pieces[number:])
                        return
                    content = self._checked(piece, payload)
                    if content is None:
                        continue
                    if piece.targets:
                        self._write_chunk(piece, content)
                    if piece.files:
                        # Never a view (see _read_payload): the writers keep it after we move on.
                        kept = content if isinstance(content, bytes) else bytes(content)
                        batch.append((kept, piece.files))
                        batch_bytes += len(content)
                        if len(batch) >= _BATCH_FILES or batch_bytes >= _BATCH_BYTES:
                            self._hand_off(batch)
                            batch, batch_bytes = [], 0
        except DestinationError:
            self.bad_blobs.update(piece.blob for piece in pieces)
        finally:
            # What was read and checked is written even when the rest of the pack is bad.
            if batch:
                self._hand_off(batch)

    def _checked(self, piece: _Piece, payload: bytes | memoryview) -> bytes | memoryview | None:
        """The blob's content, or None (and the blob marked bad) when it is not what its id says."""
        if isinstance(payload, memoryview):  # raw, read into the thread's buffer
            content: bytes | memoryview = payload
        else:
            try:
                content = decode_blob(piece.where.codec, payload, piece.where.raw_length)
            except ValueError:
                self.bad_blobs.add(piece.blob)
                return None
        if blob_id(content) != piece.blob:
            self.bad_blobs.add(piece.blob)
            return None
        return content

    def _write_chunk(self, piece: _Piece, content: bytes | memoryview) -> None:
        if not is_zero(content):
            for path, offset in piece.targets:
                write_at(path, content, offset)
        if self.progress is not None:
            self.progress.advance(len(content) * len(piece.targets))

    def _hand_off(self, batch: _Batch) -> None:
        self._in_flight.acquire()
        try:
            first_path = batch[0][1][0][0]
            writer = self.writers[hash(first_path.rpartition(b"/")[0]) % len(self.writers)]
            self._writes.append(writer.submit(self._write_batch, batch))
        except BaseException:
            self._in_flight.release()
            raise

    def _write_batch(self, batch: _Batch) -> None:
        try:
            ownership = self.ownership
            files = 0
            written = 0
            for content, targets in batch:
                for path, entry in targets:
                    write_whole_file(path, content, entry, ownership)
                files += len(targets)
                written += len(content) * len(targets)
            if self.progress is not None:
                self.progress.advance(written, files)
        finally:
            self._in_flight.release()

    def stop_writers(self, *, cancel: bool) -> None:
        for writer in self.writers:
            writer.shutdown(wait=True, cancel_futures=cancel)

    def finish_writes(self) -> None:
        """Wait for every batch handed to the writers; raises the first failure."""
        self.stop_writers(cancel=False)
        for write in self._writes:
            write.result()


def _prepare_target(target: Path, overwrite: bool) -> None:
    try:
        if target.exists() and any(target.iterdir()) and not overwrite:
            raise TargetNotEmptyError(f"restore target {target} is not empty (use --overwrite)")
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RestoreTargetError(f"cannot restore into {target}: {exc.strerror}") from exc


def _make_room(path: bytes, want_dir: bool) -> None:
    """With --overwrite: clear whatever stands where an entry goes (a dir stays a dir)."""
    if os.path.isdir(path) and not os.path.islink(path):
        if not want_dir:
            shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _create_layout(restorer: _Restorer, entries: list[Entry], overwrite: bool) -> None:
    """Directories, and files of several chunks at their full size (files of one blob are
    created when their blob arrives)."""
    for entry in entries:
        if entry.kind not in ("dir", "file"):
            continue
        path = restorer.path(entry.path)
        if overwrite:
            _make_room(path, entry.kind == "dir")
        if entry.kind == "dir":
            try:
                os.mkdir(path, 0o700)
            except (FileExistsError, FileNotFoundError):
                os.makedirs(path, mode=0o700, exist_ok=True)
        elif not _written_whole(entry):
            descriptor = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(descriptor, entry.size)
            finally:
                os.close(descriptor)


def _link_and_set_metadata(restorer: _Restorer, entries: list[Entry], overwrite: bool) -> None:
    ownership = restorer.ownership
    for entry in entries:
        if entry.kind not in ("symlink", "hardlink"):
            continue
        path = restorer.path(entry.path)
        if overwrite:
            _make_room(path, want_dir=False)
        if entry.kind == "symlink":
            os.symlink(os.fsencode(entry.target), path)
        else:
            os.link(restorer.path(entry.target), path, follow_symlinks=False)
    # Children before parents, so that writing a child does not bump its directory's mtime.
    for entry in reversed(entries):
        if entry.kind == "hardlink" or _written_whole(entry):
            continue
        path = restorer.path(entry.path)
        if ownership.needs_chown(entry):
            os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
        if entry.kind != "symlink":
            os.chmod(path, entry.mode)
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)


def restore_snapshot(
    store: ObjectStore,
    snapshot: str,
    target: Path,
    *,
    source: str | None = None,
    threads: int | None = None,
    overwrite: bool = False,
    progress: TransferMeter | None = None,
) -> RestoreResult:
    """Restore ``snapshot`` (an id, id prefix or "latest") into ``target``."""
    started = time.monotonic()
    repo = Repository.open(store, create=False)
    record = repo.find_snapshot(snapshot, source)
    entries = repo.load_manifest(record)
    unsafe = [entry.path for entry in entries if not _safe_relative(entry.path)]
    if unsafe:
        raise CorruptSnapshotError(f"snapshot {record.id} names paths outside its tree", unsafe)
    # Every blob is checked against its id as it is written; this ties each file's chunk list to
    # the hash the manifest recorded for it.
    mismatched = [e.path for e in entries if e.kind == "file" and content_hash(e.chunks) != e.hash]
    if mismatched:
        raise CorruptSnapshotError(f"snapshot {record.id} has inconsistent file hashes", mismatched)
    _prepare_target(target, overwrite)
    restorer = _Restorer(target, threads or default_threads(), progress)
    files = [entry for entry in entries if entry.kind == "file"]
    plan, unknown = restorer.plan(files, repo.load_index())
    try:
        try:
            restorer.ownership = Ownership.probe(restorer.target, trust_new_files=not overwrite)
            _create_layout(restorer, entries, overwrite)
        except OSError as exc:
            raise RestoreTargetError(f"cannot write into {target}: {exc.strerror}") from exc
        if progress is not None:
            progress.set_totals(sum(entry.size for entry in files), len(files))
            progress.start()
        try:
            with ThreadPoolExecutor(restorer.threads, thread_name_prefix="snapshot-read") as pool:
                list(pool.map(lambda item: restorer.restore_pack(store, *item), plan.items()))
            restorer.finish_writes()
        except OSError as exc:  # the target's disk: full, read-only, gone
            raise RestoreTargetError(f"cannot write into {target}: {exc.strerror}") from exc
    finally:
        restorer.stop_writers(cancel=True)
        if progress is not None:
            progress.stop()
    bad = restorer.bad_blobs
    damaged = set(unknown)
    if bad:
        damaged |= {entry.path for entry in files if not bad.isdisjoint(entry.chunks)}
    if damaged:
        damaged |= {e.path for e in entries if e.kind == "hardlink" and e.target in damaged}
    kept = [entry for entry in entries if entry.path not in damaged] if damaged else entries
    for path in damaged - {e.path for e in entries if e.kind == "hardlink"}:
        with_path = restorer.path(path)
        if os.path.lexists(with_path):
            os.unlink(with_path)
    try:
        _link_and_set_metadata(restorer, kept, overwrite)
    except OSError as exc:
        where = os.fsdecode(exc.filename) if exc.filename else str(target)
        raise RestoreTargetError(f"cannot restore {where}: {exc.strerror}") from exc
    if damaged:
        raise CorruptSnapshotError(
            f"snapshot {record.id} is damaged; restored everything else into {target}",
            sorted(damaged),
        )
    total = sum(entry.size for entry in files)
    return RestoreResult(record, len(files), total, time.monotonic() - started)
