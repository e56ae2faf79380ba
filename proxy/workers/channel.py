"""Frames between the controller and a worker: a 4-byte length, then a pickled tuple.

Both ends are this project's own processes (the worker is started by the controller with the
socket inherited), so pickle's trust model holds; nothing else can reach the socketpair.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

__all__ = ["read_frame", "write_frame"]

HEADER = struct.Struct("!I")
MAX_FRAME = 64 << 20


def write_frame(writer: asyncio.StreamWriter, message: tuple[Any, ...]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(HEADER.pack(len(data)) + data)


async def read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None when the other end closed the channel."""
    try:
        (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes")
        message = pickle.loads(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    if not isinstance(message, tuple):
        raise ValueError(f"unexpected frame {type(message).__name__}")
    return message
