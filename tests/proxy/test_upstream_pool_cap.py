"""The backend pool's cap (proxy.dataplane.upstream.MAX_CONNECTIONS): past it a request waits for
a connection to come free instead of opening one more (HTTP/2 multiplies concurrent requests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from proxy.dataplane.upstream import UpstreamPool
from proxy.tasks import TaskSet


@pytest.fixture
async def listening() -> AsyncIterator[int]:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_past_the_cap_a_request_waits_for_a_released_connection(listening: int) -> None:
    pool = UpstreamPool("127.0.0.1", listening, tls=False, connect_timeout=2, max_connections=2)
    tasks = TaskSet("test")
    first, second = await pool.connect(), await pool.connect()
    third = tasks.spawn(pool.connect(), name="connect")
    await asyncio.sleep(0.1)
    assert not third.done()  # at the cap: it waits
    # A connection that is let go of (closed) frees a slot: the waiter opens its own.
    first.close()
    conn = await asyncio.wait_for(third, 2)
    assert conn is not first
    assert conn is not second
    # A waiter that is cancelled gives up its place.
    fourth = tasks.spawn(pool.connect(), name="connect")
    await asyncio.sleep(0.05)
    fourth.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fourth
    # Closing the pool tells whoever still waits.
    fifth = tasks.spawn(pool.connect(), name="connect")
    await asyncio.sleep(0.05)
    pool.close()
    with pytest.raises(Exception, match="closed"):
        await asyncio.wait_for(fifth, 2)
    await tasks.close()
