"""HTTP forwarding against a real upstream app on loopback."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from yarl import URL

from tests.support.proxies import ProxyFactory, Upstreams, public_url, url_of


async def test_request_reaches_primary_with_path_query_and_body(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu))
    body = b"hello world" * 1000
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            public_url(proxy) / "some/path",
            params={"a": "1 2"},
            data=body,
            headers={"Host": "ide.example:8888", "Cookie": "key=v"},
        ) as r,
    ):
        assert r.status == 200
        seen = await r.json()
    assert seen["backend"] == "gpu"
    assert seen["path_qs"] == "/some/path?a=1+2"
    assert seen["body_size"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    headers = {k.lower(): v for k, v in seen["headers"]}
    # code-server's origin check needs the browser's Host, untouched.
    assert headers["host"] == "ide.example:8888"
    assert headers["x-forwarded-host"] == "ide.example:8888"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["cookie"] == "key=v"


async def test_raw_path_passes_byte_for_byte(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu))
    raw = "/vscode-remote-resource?path=%2Fhome%2Fu%2Fa%20b.py&tkn=x%3Dy"
    async with (
        aiohttp.ClientSession() as s,
        s.get(URL(str(public_url(proxy)) + raw, encoded=True)) as r,
    ):
        assert (await r.json())["path_qs"] == raw


async def test_hop_by_hop_headers_are_removed_both_ways(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu))
    async with aiohttp.ClientSession() as s:
        async with s.get(
            public_url(proxy) / "x",
            headers={
                "Connection": "keep-alive, X-Private",
                "X-Private": "secret",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Proxy-Authorization": "Basic Zm9vOmJhcg==",
                "X-Kept": "yes",
            },
        ) as r:
            headers = {k.lower() for k, _ in (await r.json())["headers"]}
        assert {"x-private", "keep-alive", "te", "proxy-authorization"}.isdisjoint(headers)
        assert "x-kept" in headers
        async with s.get(public_url(proxy) / "hop") as r:
            assert "X-Secret" not in r.headers
            assert "Keep-Alive" not in r.headers


async def test_untrusted_forwarded_headers_are_replaced(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu))
    spoof = {
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
        "Forwarded": "host=evil.example",
    }
    async with aiohttp.ClientSession() as s, s.get(public_url(proxy) / "x", headers=spoof) as r:
        headers = {k.lower(): v for k, v in (await r.json())["headers"]}
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-host"] == f"127.0.0.1:{public_url(proxy).port}"
    assert headers["x-forwarded-proto"] == "http"
    assert "forwarded" not in headers


async def test_trusted_proxy_headers_are_kept_and_extended(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    import ipaddress

    gpu, cpu = upstreams
    proxy = await make_proxy(
        url_of(gpu), url_of(cpu), trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),)
    )
    front = {
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "ide.example",
    }
    async with aiohttp.ClientSession() as s, s.get(public_url(proxy) / "x", headers=front) as r:
        headers = {k.lower(): v for k, v in (await r.json())["headers"]}
    assert headers["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-host"] == "ide.example"


async def test_large_download_streams_with_correct_length(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu))
    size = 64 * 1024 * 1024 + 17
    received = 0
    async with aiohttp.ClientSession() as s, s.get(public_url(proxy) / "download" / str(size)) as r:
        assert r.status == 200
        assert r.content_length == size
        async for chunk in r.content.iter_chunked(1 << 20):
            received += len(chunk)
    assert received == size


async def test_head_keeps_content_length_and_sends_no_body(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu))
    async with aiohttp.ClientSession() as s, s.head(public_url(proxy) / "download" / "12345") as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == "12345"
        assert await r.read() == b""


async def test_chunked_upload_streams(upstreams: Upstreams, make_proxy: ProxyFactory) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu))
    digest = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for i in range(64):
            piece = bytes([i]) * 65536
            digest.update(piece)
            yield piece

    async with aiohttp.ClientSession() as s, s.put(public_url(proxy) / "up", data=body()) as r:
        seen = await r.json()
    assert seen["body_size"] == 64 * 65536
    assert seen["body_sha256"] == digest.hexdigest()


async def test_proxy_routes_are_reserved(upstreams: Upstreams, make_proxy: ProxyFactory) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu))
    async with aiohttp.ClientSession() as s:
        async with s.get(public_url(proxy) / "__dumont" / "healthz") as r:
            assert r.status == 200
            assert (await r.json())["status"] == "ok"
        async with s.get(public_url(proxy) / "__dumont" / "status") as r:
            status = await r.json()
        assert status["active"] == "primary"
        assert status["state"] == "serving_primary"
        assert status["backends"]["primary"]["healthy"] is True
        assert status["backends"]["standby"]["last_check_latency_ms"] > 0
        # code-server's own /healthz is forwarded, not answered by the proxy.
        async with s.get(public_url(proxy) / "healthz") as r:
            assert (await r.json())["status"] == "alive"


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_no_healthy_backend_is_503_with_retry_after(
    make_proxy: ProxyFactory, method: str
) -> None:
    from tests.support.ports import free_port

    dead_a = f"http://127.0.0.1:{free_port()}"
    dead_b = f"http://127.0.0.1:{free_port()}"
    proxy = await make_proxy(URL(dead_a), URL(dead_b), switch_wait=0.3)
    async with aiohttp.ClientSession() as s, s.request(method, public_url(proxy) / "x") as r:
        assert r.status == 503
        assert int(r.headers["Retry-After"]) >= 1
        assert r.headers["Cache-Control"] == "no-store"
        assert (await r.json())["error"].startswith("no healthy backend")
