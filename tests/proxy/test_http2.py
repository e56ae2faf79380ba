"""HTTP/2 to the browser over TLS (issue 19), against real backends, with python-hyper's h2 as the
client: ALPN, forwarding both ways, flow control, the exchange's behaviour shared with HTTP/1.1
(watcher, transition page, re-sending on a switch, the pages app), WebSockets inside streams
(RFC 8441), metrics and a graceful end."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import ssl
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from proxy.dataplane.h2_connection import H2Connection
from proxy.dataplane.h2_stream import OUTBOX_HIGH
from proxy.server import ProxyServer
from tests.support.h2client import H2Client, tls_settings
from tests.support.ports import free_port
from tests.support.proxies import ProxyFactory, Upstreams, control_url, url_of

NAVIGATE = [(b"sec-fetch-mode", b"navigate"), (b"accept", b"text/html,*/*")]


def _port(server: ProxyServer) -> int:
    assert server.public is not None
    return server.public.address.port


def fields(path: str, method: str = "GET", host: str = "ide.test") -> list[tuple[bytes, bytes]]:
    return H2Client.request_fields(path, method, host)


async def _proxy(
    make_proxy: ProxyFactory, upstreams: Upstreams, certificate: tuple[Path, Path], **extra: object
) -> ProxyServer:
    gpu, cpu = upstreams
    return await make_proxy(url_of(gpu), url_of(cpu), tls=tls_settings(certificate), **extra)


async def test_alpn_offers_h2_first_and_http11_still_works(
    upstreams: Upstreams, make_proxy: ProxyFactory, certificate: tuple[Path, Path]
) -> None:
    proxy = await _proxy(make_proxy, upstreams, certificate)
    client = await H2Client.open(_port(proxy))  # asserts ALPN chose h2
    reply = await client.request(fields("/alpn?q=1"))
    await client.close()
    assert reply.status == 200
    echoed = json.loads(reply.body)
    assert echoed["path_qs"] == "/alpn?q=1"
    assert ["X-Forwarded-Proto", "https"] in echoed["headers"]
    assert ["Host", "ide.test"] in echoed["headers"]
    # A client that offers only HTTP/1.1 is served HTTP/1.1 on the same port.
    context = ssl.create_default_context(cafile=str(certificate[0]))
    context.set_alpn_protocols(["http/1.1"])
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"https://127.0.0.1:{_port(proxy)}/h1", ssl=context) as r,
    ):
        assert r.status == 200
        assert r.version == aiohttp.HttpVersion11


async def test_cleartext_http2_is_still_refused(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu))  # no TLS: HTTP/1.1 only
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(proxy))
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # the prior-knowledge preface
    answer = await asyncio.wait_for(reader.read(1024), 5)
    writer.close()
    assert answer.startswith((b"HTTP/1.1 4", b"HTTP/1.1 505"))
    async with (  # an h2c upgrade is served as HTTP/1.1, never switched
        aiohttp.ClientSession() as s,
        s.get(
            URL(f"http://127.0.0.1:{_port(proxy)}/h2c"),
            headers={"Upgrade": "h2c", "Connection": "Upgrade, HTTP2-Settings",
                     "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"},
        ) as r,
    ):  # fmt: skip
        assert r.status == 200
        assert r.version == aiohttp.HttpVersion11


async def test_bodies_both_ways_with_and_without_length(
    upstreams: Upstreams, make_proxy: ProxyFactory, certificate: tuple[Path, Path]
) -> None:
    proxy = await _proxy(make_proxy, upstreams, certificate)
    client = await H2Client.open(_port(proxy))
    body = os.urandom(3 * 1024 * 1024 + 17)
    sized = await client.request(
        [*fields("/upload", "POST"), (b"content-length", b"%d" % len(body))], body
    )
    unsized = await client.request(fields("/upload", "POST"), body)
    download = await client.request(fields("/download/20000000"))
    head = await client.request(fields("/download/1234", "HEAD"))
    await client.close()
    for reply in (sized, unsized):
        assert reply.status == 200
        echoed = json.loads(reply.body)
        assert echoed["body_size"] == len(body)
        assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert download.status == 200
    assert len(download.body) == 20_000_000
    assert download.header(b"content-length") == b"20000000"
    assert head.status == 200
    assert head.header(b"content-length") == b"1234"
    assert head.body == b""


async def test_many_streams_at_once_on_one_connection(
    upstreams: Upstreams, make_proxy: ProxyFactory, certificate: tuple[Path, Path]
) -> None:
    proxy = await _proxy(make_proxy, upstreams, certificate)
    client = await H2Client.open(_port(proxy))
    ids = [client.start(fields(f"/many/{n}")) for n in range(100)]
    await client.flush()
    await client.wait_for(lambda: all(client.replies[i].ended for i in ids), 20)
    await client.close()
    paths = {json.loads(client.replies[i].body)["path_qs"] for i in ids}
    assert paths == {f"/many/{n}" for n in range(100)}


async def test_a_stalled_download_does_not_starve_the_others_and_stays_bounded(
    upstreams: Upstreams, make_proxy: ProxyFactory, certificate: tuple[Path, Path]
) -> None:
    proxy = await _proxy(make_proxy, upstreams, certificate)
    client = await H2Client.open(_port(proxy))
    stalled = client.start(fields("/download/200000000"))  # 200 MB the browser never reads
    client.hold.add(stalled)
    flowing = client.start(fields("/download/30000000"))
    await client.flush()
    await client.wait_for(lambda: client.replies[flowing].ended, 30)
    assert len(client.replies[flowing].body) == 30_000_000
    assert not client.replies[stalled].ended
    assert len(client.replies[stalled].body) < 1024 * 1024  # its window: 64 KiB
    [connection] = _h2_connections(proxy)
    [stream] = connection.streams.values()
    # What the proxy holds for the stalled stream is about one high-water mark (its backend
    # is no longer read), not the 200 MB the backend would send.
    assert stream.throttled
    assert stream.outbox_size < OUTBOX_HIGH + 2 * 1024 * 1024
    await client.close()


def _h2_connections(proxy: ProxyServer) -> list[H2Connection]:
    assert proxy.public is not None
    return [c for c in proxy.public.context.connections if isinstance(c, H2Connection)]


async def test_watcher_pages_app_and_transition_page_over_h2(
    upstreams: Upstreams, make_proxy: ProxyFactory, certificate: tuple[Path, Path]
) -> None:
    proxy = await _proxy(make_proxy, upstreams, certificate)
    client = await H2Client.open(_port(proxy))
    page = await client.request(fields("/page") + NAVIGATE)
    health = await client.request(fields("/__dumont/healthz"))
    static = await client.request(fields("/__dumont/static/watcher.js"))
    await client.close()
    assert page.status == 200
    assert b"/__dumont/static/watcher.js" in page.body  # injected into code-server's document
    assert page.header(b"content-length") == b"%d" % len(page.body)
    assert health.status == 200
    assert json.loads(health.body)["status"] == "ok"
    assert static.status == 200
    assert len(static.body) > 100


async def test_navigation_with_no_backend_gets_the_transition_page(
    make_proxy: ProxyFactory, certificate: tuple[Path, Path]
) -> None:
    dead = [URL(f"http://127.0.0.1:{free_port()}") for _ in range(2)]
    proxy = await make_proxy(*dead, switch_wait=0.2, tls=tls_settings(certificate))
    client = await H2Client.open(_port(proxy))
    page = await client.request(fields("/some/file?x=1") + NAVIGATE)
    api = await client.request([*fields("/api"), (b"accept", b"*/*")])
    await client.close()
    assert page.status == 503
    assert (page.header(b"content-type") or b"").startswith(b"text/html")
    assert page.header(b"retry-after") is not None
    assert b"/some/file?x=1" in page.body
    assert api.status == 503
    assert (api.header(b"content-type") or b"").startswith(b"application/json")


async def test_idempotent_request_is_resent_when_its_backend_is_switched_away(
    upstreams: Upstreams, make_proxy: ProxyFactory, certificate: tuple[Path, Path]
) -> None:
    proxy = await _proxy(make_proxy, upstreams, certificate)
    client = await H2Client.open(_port(proxy))
    slow = client.start(fields("/slow?s=1.5"))
    await client.flush()
    await asyncio.sleep(0.5)  # it waits for the primary's headers
    proxy.workspace.failover()
    await client.wait_for(lambda: client.replies[slow].ended, 10)
    await client.close()
    assert client.replies[slow].status == 200
    assert client.replies[slow].body == b"slow from cpu"


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 5.2), payload under 126 bytes."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked


def _ws_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Unmasked server frames with short payloads."""
    out = []
    while len(data) >= 2:
        length = data[1] & 0x7F
        out.append((data[0] & 0x0F, data[2 : 2 + length]))
        data = data[2 + length :]
    return out


def _ws_fields(path: str) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"),
            (b":authority", b"ide.test"), (b":path", path.encode()),
            (b"sec-websocket-version", b"13"),
            (b"sec-websocket-protocol", b"v1.dumont")]  # fmt: skip


async def test_websocket_inside_a_stream_echoes_and_a_switch_closes_it_with_1012(
    upstreams: Upstreams, make_proxy: ProxyFactory, certificate: tuple[Path, Path]
) -> None:
    proxy = await _proxy(make_proxy, upstreams, certificate)
    client = await H2Client.open(_port(proxy))
    assert client.conn.remote_settings.enable_connect_protocol == 1  # RFC 8441 3
    ws = client.start(_ws_fields("/ws"), end=False)
    await client.flush()
    await client.wait_for(lambda: client.replies[ws].status != 0, 10)
    reply = client.replies[ws]
    assert reply.status == 200
    assert reply.header(b"sec-websocket-protocol") == b"v1.dumont"
    assert reply.header(b"sec-websocket-accept") is None  # the HTTP/1.1 hop's, not the browser's
    client.conn.send_data(ws, _ws_frame(0x1, b"whoami"))
    await client.flush()
    await client.wait_for(lambda: len(reply.body) >= 5, 10)
    assert _ws_frames(bytes(reply.body)) == [(0x1, b"gpu")]
    reply.body.clear()
    # A plain request on the same connection goes on beside the WebSocket.
    assert (await client.request(fields("/beside"))).status == 200
    proxy.workspace.failover()
    await client.wait_for(lambda: reply.ended or reply.reset is not None, 10)
    [(opcode, payload)] = _ws_frames(bytes(reply.body))
    assert opcode == 0x8
    assert int.from_bytes(payload[:2], "big") == 1012
    # The next WebSocket reaches the standby.
    again = client.start(_ws_fields("/ws"), end=False)
    await client.flush()
    await client.wait_for(lambda: client.replies[again].status != 0, 10)
    client.conn.send_data(again, _ws_frame(0x1, b"whoami"))
    await client.flush()
    await client.wait_for(lambda: len(client.replies[again].body) >= 5, 10)
    assert _ws_frames(bytes(client.replies[again].body)) == [(0x1, b"cpu")]
    await client.close()


async def test_websocket_refused_by_the_backend_reaches_the_browser_as_said(
    upstreams: Upstreams, make_proxy: ProxyFactory, certificate: tuple[Path, Path]
) -> None:
    proxy = await _proxy(make_proxy, upstreams, certificate)
    client = await H2Client.open(_port(proxy))
    # The test backend has no WebSocket at /nows: it answers the upgrade GET with a 200 echo,
    # which is no 101: the browser gets that status, and the stream ends.
    reply = await client.request(_ws_fields("/nows"))
    await client.close()
    assert reply.status == 200 or reply.status >= 400
    assert reply.ended


async def test_shutdown_sends_goaway_finishes_streams_and_closes_websockets_1001(
    upstreams: Upstreams, make_proxy: ProxyFactory, certificate: tuple[Path, Path]
) -> None:
    proxy = await _proxy(make_proxy, upstreams, certificate)
    client = await H2Client.open(_port(proxy))
    ws = client.start(_ws_fields("/ws"), end=False)
    await client.flush()
    await client.wait_for(lambda: client.replies[ws].status == 200, 10)
    slow = client.start(fields("/slow?s=0.8"))
    await client.flush()
    await asyncio.sleep(0.2)
    stopping = asyncio.get_running_loop().create_task(proxy.stop())
    await client.wait_for(lambda: client.goaway is not None, 5)
    assert client.goaway == 0  # NO_ERROR: a graceful GOAWAY
    await client.wait_for(lambda: client.replies[slow].ended, 5)
    assert client.replies[slow].body == b"slow from gpu"  # begun before GOAWAY: finished
    [(opcode, payload)] = _ws_frames(bytes(client.replies[ws].body))
    assert opcode == 0x8
    assert int.from_bytes(payload[:2], "big") == 1001
    assert await client.closed_by_server(5)
    await stopping
    await client.close()


async def test_metrics_count_requests_per_protocol_and_keep_the_old_names(
    upstreams: Upstreams, make_proxy: ProxyFactory, certificate: tuple[Path, Path]
) -> None:
    proxy = await _proxy(make_proxy, upstreams, certificate, access_log=True)
    client = await H2Client.open(_port(proxy))
    for n in range(3):
        assert (await client.request(fields(f"/m{n}"))).status == 200
    await client.close()
    async with aiohttp.ClientSession() as s, s.get(control_url(proxy) / "metrics") as r:
        text = await r.text()
    assert 'dumont_client_requests_total{protocol="h2"} 3' in text
    assert 'dumont_client_connections_total{protocol="h2"} 1' in text
    assert "dumont_http_request_duration_seconds_count" in text  # the per-request metrics


async def test_access_log_says_http2(
    upstreams: Upstreams,
    make_proxy: ProxyFactory,
    certificate: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    proxy = await _proxy(make_proxy, upstreams, certificate, access_log=True)
    client = await H2Client.open(_port(proxy))
    assert (await client.request(fields("/logged"))).status == 200
    await client.close()
    assert any('"GET /logged HTTP/2" 200' in r.getMessage() for r in caplog.records)


async def test_hsts_on_every_http2_answer(
    upstreams: Upstreams, make_proxy: ProxyFactory, certificate: tuple[Path, Path]
) -> None:
    gpu, cpu = upstreams
    tls = dataclasses.replace(tls_settings(certificate), hsts=600.0)
    proxy = await make_proxy(url_of(gpu), url_of(cpu), tls=tls)
    client = await H2Client.open(_port(proxy))
    forwarded = await client.request(fields("/hsts"))
    document = await client.request(fields("/page") + NAVIGATE)
    own = await client.request(fields("/__dumont/healthz"))
    await client.close()
    for reply in (forwarded, document, own):
        assert reply.status == 200
        assert reply.header(b"strict-transport-security") == b"max-age=600"


async def test_server_sent_events_stream_a_switch_over_http2(
    upstreams: Upstreams, make_proxy: ProxyFactory, certificate: tuple[Path, Path]
) -> None:
    """The transition page's and the watcher's event stream (the pages app, no length) flows
    in a stream as it is written, and cancelling it leaves the connection serving."""
    proxy = await _proxy(make_proxy, upstreams, certificate)
    client = await H2Client.open(_port(proxy))
    events = client.start([*fields("/__dumont/events"), (b"accept", b"text/event-stream")])
    await client.flush()
    reply = client.replies[events]
    await client.wait_for(lambda: _events(reply.body), 10)
    assert (reply.header(b"content-type") or b"").startswith(b"text/event-stream")
    assert _events(reply.body)[0]["active"] == "primary"
    reply.body.clear()
    proxy.workspace.failover()
    await client.wait_for(lambda: _events(reply.body), 10)
    assert _events(reply.body)[0]["active"] == "standby"
    client.conn.reset_stream(events)  # the tab went away
    after = await client.request(fields("/after-events"))
    await client.close()
    assert after.status == 200


def _events(body: bytearray) -> list[dict[str, object]]:
    """The whole ``data:`` lines of a server-sent event stream so far, parsed."""
    return [
        json.loads(line[5:])
        for line in bytes(body).split(b"\n")
        if line.startswith(b"data:") and line.rstrip().endswith(b"}")
    ]
