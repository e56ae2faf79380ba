"""The contract every destination fulfils, and helpers shared by their implementations."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

__all__ = ["IteratorReader", "ObjectStore", "Payload", "ReadStream", "joined", "skip_bytes"]

# What put() takes: bytes, or a view of a reused pack buffer that a local store writes without
# copying it first.
Payload = bytes | memoryview


def joined(data: Payload) -> bytes:
    return data if isinstance(data, bytes) else data.tobytes()


class ReadStream(Protocol):
    """What restore needs from a stored object opened for reading."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seekable(self) -> bool: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...


class ObjectStore(Protocol):
    """Named immutable objects. ``put`` is atomic: a reader sees the whole object or none."""

    def describe(self) -> str:
        """Where this store is, for messages; never holds credentials."""
        ...

    def check_writable(self) -> None:
        """Create the store if needed and prove an object can be written, or raise."""
        ...

    def put(self, name: str, data: Payload) -> None: ...

    def get(self, name: str) -> bytes: ...

    def open_stream(self, name: str) -> AbstractContextManager[ReadStream]:
        """The object as a stream read front to back, so large objects never sit in memory."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Names of all objects whose name starts with ``prefix``."""
        ...

    def delete(self, names: Iterable[str]) -> None: ...

    def close(self) -> None: ...


def skip_bytes(stream: ReadStream, count: int) -> None:
    """Move ``count`` bytes forward: a seek where the stream allows it, else read and drop."""
    if count <= 0:
        return
    if stream.seekable():
        stream.seek(count, 1)
        return
    while count > 0:
        dropped = stream.read(min(count, 1 << 20))
        if not dropped:
            return
        count -= len(dropped)


class IteratorReader:
    """A read-only binary stream over an iterator of byte strings (an HTTP body, a pipe)."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        self._parts = parts
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def seek(self, offset: int, whence: int = 0, /) -> int:
        raise OSError("stream is not seekable")

    def read(self, size: int = -1) -> bytes:
        pieces: list[bytes] = []
        wanted = size if size >= 0 else None
        while wanted is None or wanted > 0:
            if not self._pending:
                part = next(self._parts, None)
                if part is None:
                    break
                self._pending = memoryview(part)
                continue
            take = len(self._pending) if wanted is None else min(wanted, len(self._pending))
            pieces.append(bytes(self._pending[:take]))
            self._pending = self._pending[take:]
            if wanted is not None:
                wanted -= take
        return b"".join(pieces)
