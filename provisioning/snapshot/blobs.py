"""Blobs: content hashed with BLAKE3, cut by FastCDC, compressed with zstd unless incompressible.

A blob's id is the BLAKE3 hash of its plain content, so identical content is stored once and every
byte read back can be checked. Big files are cut at content-defined boundaries (FastCDC), so a line
inserted in the middle of a 170 MB log changes one chunk, not everything after it. Big files whose
middle does not compress (model weights, archives) are cut every 4 MiB instead: they are
rewritten, not edited in place, and cutting costs 0.5 s of CPU per GB.

Every function here is safe to call from many threads at once: the hashers, the chunker and the
zstd (de)compressors are per thread, and all of them release the GIL on large buffers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import blake3
import zstandard

if TYPE_CHECKING:
    import pyfastcdc

__all__ = [
    "FIXED_CHUNK_SIZE",
    "SAMPLE_SIZE",
    "SMALL_FILE_LIMIT",
    "ChunkerParams",
    "Codec",
    "EncodedBlob",
    "blob_id",
    "content_hash",
    "decode_blob",
    "encode_blob",
    "file_chunks",
    "fixed_chunks",
    "looks_incompressible",
    "raw_blob",
    "sample_is_incompressible",
]

Codec = Literal["zstd", "raw"]

# Files up to this size are one blob, read in one call (most source files).
SMALL_FILE_LIMIT = 1 << 20
# A blob whose sample shrinks by less than this is stored as is (model weights, archives).
_INCOMPRESSIBLE_RATIO = 0.95
SAMPLE_SIZE = 64 * 1024
# Incompressible big files are cut every 4 MiB (the largest content-defined chunk).
FIXED_CHUNK_SIZE = 4 << 20


@dataclass(frozen=True, slots=True)
class ChunkerParams:
    """FastCDC sizes; fixed per repository so that the same content always cuts the same way."""

    average: int = 1 << 20
    minimum: int = 256 * 1024
    maximum: int = 4 << 20


@dataclass(frozen=True, slots=True)
class EncodedBlob:
    id: str
    raw_length: int
    codec: Codec
    payload: bytes | memoryview


def blob_id(data: bytes | memoryview) -> str:
    return blake3.blake3(data).hexdigest()


def content_hash(chunks: Sequence[str]) -> str:
    """A file's hash: its one blob's id, or for a file of several chunks the BLAKE3 of the chunk
    ids (a Merkle hash, as restic keeps a file as its list of blob ids).

    Each chunk id is the hash of that chunk's bytes, so this names the content as surely as a
    hash over all the bytes would, and restore checks it without reading the file once more.
    """
    if len(chunks) == 1:
        return chunks[0]
    return blake3.blake3(b"".join(bytes.fromhex(chunk) for chunk in chunks)).hexdigest()


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.compressors: dict[int, zstandard.ZstdCompressor] = {}
        self.decompressor = zstandard.ZstdDecompressor()
        self.chunkers: dict[ChunkerParams, pyfastcdc.FastCDC] = {}


_per_thread = _PerThread()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    compressor = _per_thread.compressors.get(level)
    if compressor is None:
        compressor = zstandard.ZstdCompressor(level=level)
        _per_thread.compressors[level] = compressor
    return compressor


def sample_is_incompressible(sample: bytes | memoryview, level: int) -> bool:
    """True when zstd at ``level`` cannot take 5 % off ``sample``."""
    return len(_compressor(level).compress(sample)) > len(sample) * _INCOMPRESSIBLE_RATIO


def looks_incompressible(data: bytes | memoryview, level: int) -> bool:
    """Compress a sample from the middle (headers of weight files compress; the tensors don't)."""
    if len(data) <= SAMPLE_SIZE:
        return False
    middle = len(data) // 2
    return sample_is_incompressible(
        data[middle - SAMPLE_SIZE // 2 : middle + SAMPLE_SIZE // 2], level
    )


def encode_blob(
    data: bytes | memoryview,
    level: int,
    known_id: str | None = None,
    *,
    sampled: bool = False,
) -> EncodedBlob:
    """Hash and compress one blob; keeps it raw when zstd would not save at least 5 %.

    ``sampled``: the caller already found that a sample of ``data`` compresses, so compressing
    the sample again would only cost time. A raw blob's payload is ``data`` itself, not a copy:
    store it before ``data`` is reused.
    """
    identity = known_id or blob_id(data)
    if sampled or not looks_incompressible(data, level):
        compressed = _compressor(level).compress(data)
        if len(compressed) < len(data) * _INCOMPRESSIBLE_RATIO:
            return EncodedBlob(identity, len(data), "zstd", compressed)
    return raw_blob(data, identity)


def raw_blob(data: bytes | memoryview, identity: str) -> EncodedBlob:
    return EncodedBlob(identity, len(data), "raw", data)


def decode_blob(codec: str, payload: bytes, raw_length: int) -> bytes:
    """The blob's plain content; raises ValueError when the payload cannot be decoded."""
    if codec == "raw":
        return payload
    if codec == "zstd":
        try:
            return _per_thread.decompressor.decompress(payload, max_output_size=raw_length)
        except zstandard.ZstdError as exc:
            raise ValueError(f"zstd: {exc}") from exc
    raise ValueError(f"unknown codec {codec!r}")


def _chunker(params: ChunkerParams) -> pyfastcdc.FastCDC:
    chunker = _per_thread.chunkers.get(params)
    if chunker is None:
        import pyfastcdc  # only create cuts compressible big files: restore never loads it

        chunker = pyfastcdc.FastCDC(
            params.average, min_size=params.minimum, max_size=params.maximum
        )
        _per_thread.chunkers[params] = chunker
    return chunker


def file_chunks(
    readinto: Callable[[memoryview], int], params: ChunkerParams
) -> Iterator[memoryview]:
    """The content-defined chunks of a stream, each valid only until the next one is produced."""

    class _Reader:
        def readinto(self, target: memoryview) -> int:
            return readinto(target)

    for chunk in _chunker(params).cut_stream(_Reader()):
        yield chunk.data


def fixed_chunks(readinto: Callable[[memoryview], int], buffer: bytearray) -> Iterator[memoryview]:
    """Chunks of ``len(buffer)`` bytes (the last one shorter), each valid until the next."""
    view = memoryview(buffer)
    while True:
        filled = 0
        while filled < len(view):
            count = readinto(view[filled:])
            if not count:
                break
            filled += count
        if filled:
            yield view[:filled]
        if filled < len(view):
            return
