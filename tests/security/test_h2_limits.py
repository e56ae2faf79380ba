"""What one HTTP/2 client may cost the proxy (issue 19): each limit, crossed on purpose with raw
frames, closes the offending connection with GOAWAY while another client keeps being served.

CVE-2023-44487 (rapid reset), SETTINGS and PING floods, CONTINUATION floods (CVE-2024-27316 and
its cousins), oversized header lists, too many streams, zero-window stalls, idle connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    SettingsFrame,
)
from yarl import URL

from proxy.config import Http2Config, LimitsConfig
from proxy.server import ProxyServer
from tests.support.h2client import H2Client, Reply, header_block, tls_settings
from tests.support.proxies import ProxyFactory
from tests.support.rawnet import CountingUpstream

ENHANCE_YOUR_CALM = int(ErrorCodes.ENHANCE_YOUR_CALM)
LIMITS = Http2Config(
    max_concurrent_streams=8, max_header_list_size=4096, max_resets=20, max_control_frames=50
)


@pytest.fixture
async def h2_proxy(
    make_proxy: ProxyFactory, upstream: CountingUpstream, certificate: tuple[Path, Path]
) -> ProxyServer:
    return await make_proxy(
        URL(f"http://127.0.0.1:{upstream.port}"),
        URL(f"http://localhost:{upstream.port}"),
        tls=tls_settings(certificate),
        http2=LIMITS,
        limits=LimitsConfig(send_timeout=1.0, keepalive_timeout=1.5, header_timeout=2.0),
    )


def _port(server: ProxyServer) -> int:
    assert server.public is not None
    return server.public.address.port


async def _others_still_served(server: ProxyServer) -> None:
    other = await H2Client.open(_port(server))
    reply = await other.request(H2Client.request_fields("/h2-limits-bystander"))
    await other.close()
    assert reply.status == 200


async def _goaway_and_closed(client: H2Client, code: int) -> None:
    assert await client.closed_by_server(10)
    assert client.goaway == code


async def _flood(client: H2Client, frames: bytes | None = None) -> None:
    """Send (the h2 client's queue, or raw ``frames``), then read until the server has closed;
    the server may cut in while this still sends."""
    with contextlib.suppress(ConnectionError):
        if frames is None:
            await client.flush()
        else:
            await client.send_raw(frames)
    with contextlib.suppress(ConnectionError):
        assert await client.closed_by_server(10)


async def test_rapid_reset_closes_the_connection(
    h2_proxy: ProxyServer, upstream: CountingUpstream
) -> None:
    client = await H2Client.open(_port(h2_proxy))
    for n in range(200):  # opened and reset at once, as in CVE-2023-44487
        stream_id = client.start(H2Client.request_fields(f"/h2-rapid-reset/{n}"))
        client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
    await _flood(client)
    assert client.goaway == ENHANCE_YOUR_CALM
    await client.close()
    # The backend saw no more than the streams allowed before the limit, not 200.
    assert len(upstream.requests("/h2-rapid-reset/")) <= LIMITS.max_resets + 1
    await _others_still_served(h2_proxy)


@pytest.mark.parametrize(
    "frame",
    [
        SettingsFrame(0).serialize(),
        PingFrame(0, opaque_data=b"12345678").serialize(),
        # Empty DATA on an open stream (its HEADERS without END_STREAM go first, below).
        DataFrame(1, data=b"").serialize(),
    ],
    ids=["settings", "ping", "empty-data"],
)
async def test_control_frame_floods_close_the_connection(
    h2_proxy: ProxyServer, frame: bytes
) -> None:
    client = await H2Client.open(_port(h2_proxy))
    opening = HeadersFrame(
        1, data=header_block(H2Client.request_fields("/slow", "POST")), flags=["END_HEADERS"]
    )
    await _flood(client, opening.serialize() + frame * 500)
    assert client.goaway == ENHANCE_YOUR_CALM
    await client.close()
    await _others_still_served(h2_proxy)


async def test_continuation_flood_closes_the_connection(
    h2_proxy: ProxyServer, upstream: CountingUpstream
) -> None:
    client = await H2Client.open(_port(h2_proxy))
    block = header_block(H2Client.request_fields("/h2-continuation"))
    headers = HeadersFrame(1, data=block)  # no END_HEADERS: a CONTINUATION must follow
    junk = header_block([(b"x-junk", b"j" * 100)])
    flood = b"".join(ContinuationFrame(1, data=junk).serialize() for _ in range(1000))
    await _flood(client, headers.serialize() + flood)
    assert client.goaway == int(ErrorCodes.PROTOCOL_ERROR)  # h2: "too many continuation frames"
    await client.close()
    assert upstream.requests("/h2-continuation") == []
    await _others_still_served(h2_proxy)


async def test_header_list_over_the_setting_is_431_and_the_connection_goes_on(
    h2_proxy: ProxyServer, upstream: CountingUpstream
) -> None:
    client = await H2Client.open(_port(h2_proxy))
    assert client.conn.remote_settings.max_header_list_size == LIMITS.max_header_list_size
    big = [*H2Client.request_fields("/h2-big-headers"), (b"x-big", b"b" * 6000)]
    reply = await client.request(big)
    assert reply.status == 431
    assert (await client.request(H2Client.request_fields("/h2-after-big"))).status == 200
    # Past what h2 decodes at all (64 KiB): an HPACK bomb's guard, a connection error.
    huge = [*H2Client.request_fields("/h2-huge-headers"), (b"x-huge", b"h" * 70000)]
    stream_id = client.start(huge)
    await client.flush()
    await client.wait_for(lambda: client.done(stream_id) or client.goaway is not None, 10)
    assert client.goaway == ENHANCE_YOUR_CALM
    await client.close()
    assert upstream.requests("/h2-big-headers") == []
    assert upstream.requests("/h2-huge-headers") == []


async def test_streams_past_the_concurrency_setting_end_the_connection(
    h2_proxy: ProxyServer,
) -> None:
    client = await H2Client.open(_port(h2_proxy))
    assert client.conn.remote_settings.max_concurrent_streams == LIMITS.max_concurrent_streams
    # The h2 client keeps to the setting; an attacker's client does not: hand-built HEADERS
    # without END_STREAM keep every stream open.
    frames = b"".join(
        HeadersFrame(
            2 * n + 1,
            data=header_block(H2Client.request_fields(f"/h2-streams/{n}", "POST")),
            flags=["END_HEADERS"],
        ).serialize()
        for n in range(LIMITS.max_concurrent_streams + 4)
    )
    await _flood(client, frames)
    assert client.goaway is not None
    assert client.goaway != 0
    await client.close()
    await _others_still_served(h2_proxy)


async def test_a_zero_window_reader_is_cut_off_after_the_send_timeout(
    h2_proxy: ProxyServer,
) -> None:
    client = await H2Client.open(_port(h2_proxy), window=0)  # it never lets a byte through
    stream_id = client.start(H2Client.request_fields("/big"))
    await client.flush()
    started = time.monotonic()
    await client.wait_for(lambda: client.replies[stream_id].status == 200, 10)
    await _others_still_served(h2_proxy)  # meanwhile, others are served
    await _goaway_and_closed(client, int(ErrorCodes.NO_ERROR))
    assert time.monotonic() - started < 8  # send_timeout is 1 s here
    await client.close()


async def test_an_idle_connection_is_closed_with_goaway(h2_proxy: ProxyServer) -> None:
    client = await H2Client.open(_port(h2_proxy))
    assert (await client.request(H2Client.request_fields("/h2-idle"))).status == 200
    started = time.monotonic()
    await _goaway_and_closed(client, int(ErrorCodes.NO_ERROR))
    assert 1.0 < time.monotonic() - started < 6  # keepalive_timeout is 1.5 s here
    await client.close()


async def test_nothing_but_a_handshake_is_closed_after_the_head_timeout(
    h2_proxy: ProxyServer,
) -> None:
    client = await H2Client.open(_port(h2_proxy))  # the preface, then silence
    started = time.monotonic()
    assert await client.closed_by_server(10)
    assert time.monotonic() - started < 6  # header_timeout is 2 s here
    await client.close()
    await asyncio.sleep(0)


async def test_a_stalled_request_body_gets_408_and_frees_its_backend_request(
    make_proxy: ProxyFactory, upstream: CountingUpstream, certificate: tuple[Path, Path]
) -> None:
    server = await make_proxy(
        URL(f"http://127.0.0.1:{upstream.port}"),
        URL(f"http://localhost:{upstream.port}"),
        tls=tls_settings(certificate),
        limits=LimitsConfig(body_timeout=1.0),
    )
    client = await H2Client.open(_port(server))
    fields = [*H2Client.request_fields("/h2-slow-body", "POST"), (b"content-length", b"100")]
    stream_id = client.start(fields, b"only ten b", end=False)  # then nothing more
    await client.flush()
    started = time.monotonic()
    await client.wait_for(lambda: client.done(stream_id), 10)
    assert client.replies[stream_id].status == 408
    assert time.monotonic() - started < 6
    # The connection goes on; the backend never got a whole request.
    assert (await client.request(H2Client.request_fields("/h2-after-slow-body"))).status == 200
    await client.close()
    assert [s for s in upstream.requests("/h2-slow-body") if s.complete] == []


async def test_priority_on_every_request_is_no_flood(h2_proxy: ProxyServer) -> None:
    """Chromium flags each HEADERS with a priority: a page of many requests must not count as a
    control-frame flood (max_control_frames is 50 here)."""
    client = await H2Client.open(_port(h2_proxy))
    for n in range(4):
        ids = []
        for m in range(LIMITS.max_concurrent_streams):
            stream_id = client.conn.get_next_available_stream_id()
            client.replies[stream_id] = Reply()
            client.conn.send_headers(
                stream_id, H2Client.request_fields(f"/h2-priority/{n}/{m}"), end_stream=True,
                priority_weight=220, priority_depends_on=0, priority_exclusive=True,
            )  # fmt: skip
            ids.append(stream_id)
        await client.flush()
        await client.wait_for(lambda ids=ids: all(client.done(i) for i in ids), 20)
        assert all(client.replies[i].status == 200 for i in ids)
    assert client.goaway is None
    await client.close()
