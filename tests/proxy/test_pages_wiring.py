"""The transition pages wired into the core: injection, the transition page, events, failback."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import aiohttp
from yarl import URL

from proxy.pages import WATCHER_SRC
from tests.support.ports import free_port
from tests.support.proxies import ProxyFactory, Upstreams, public_url, url_of

NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}


async def test_watcher_is_injected_into_compressed_documents(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu))
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.get(public_url(proxy) / "page", headers={"Accept-Encoding": "gzip"}) as r:
            raw = await r.read()
            assert r.headers["Content-Encoding"] == "gzip"
            assert int(r.headers["Content-Length"]) == len(raw)
        document = gzip.decompress(raw).decode()
        assert document.count(WATCHER_SRC) == 1
        assert 'data-dumont-epoch="1"' in document
        assert document.endswith("<body>gpu</body>")
        # Not HTML: untouched.
        async with s.get(public_url(proxy) / "x") as r:
            assert WATCHER_SRC not in await r.text()


async def test_watcher_off_in_config_means_documents_pass_untouched(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    from proxy.pages import PagesConfig

    gpu, cpu = upstreams
    proxy = await make_proxy(
        url_of(gpu), url_of(cpu), pages=PagesConfig.from_mapping({"watcher": False})
    )
    async with aiohttp.ClientSession() as s, s.get(public_url(proxy) / "page") as r:
        assert WATCHER_SRC not in await r.text()


async def test_no_backend_navigation_gets_the_page_and_api_gets_json(
    make_proxy: ProxyFactory,
) -> None:
    dead = [URL(f"http://127.0.0.1:{free_port()}") for _ in range(2)]
    proxy = await make_proxy(*dead, switch_wait=0.2)
    async with aiohttp.ClientSession() as s:
        async with s.get((public_url(proxy) / "some/file").with_query(x=1), headers=NAVIGATE) as r:
            assert r.status == 503
            assert r.headers["Content-Type"].startswith("text/html")
            assert r.headers["Cache-Control"] == "no-store"
            assert "Retry-After" in r.headers
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            page = await r.text()
        assert "/some/file?x=1" in page  # where the page returns the user once ready
        async with s.get(public_url(proxy) / "api", headers={"Accept": "*/*"}) as r:
            assert r.status == 503
            assert r.headers["Content-Type"].startswith("application/json")


async def test_events_stream_a_switch_and_status_counts_tips(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu))
    async with aiohttp.ClientSession() as s:
        async with s.get(public_url(proxy) / "__dumont" / "events") as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            first = await _next_event(r.content)
            assert first["active"] == "primary"
            assert first["ready"] is True
            proxy.workspace.failover()
            second = await _next_event(r.content)
            assert second["active"] == "standby"
            assert second["epoch"] == first["epoch"] + 1
        async with s.get(public_url(proxy) / "__dumont" / "transition") as r:
            assert r.status == 200
        async with s.get(public_url(proxy) / "__dumont" / "status") as r:
            tips = (await r.json())["tips"]
        assert sum(t["impressions"] for t in tips.values()) >= 1


async def _next_event(stream: aiohttp.StreamReader) -> dict[str, Any]:
    while True:
        line = await asyncio.wait_for(stream.readline(), 10)
        if line.startswith(b"data:"):
            return json.loads(line[5:])  # type: ignore[no-any-return]


async def test_failback_route_is_same_origin_only(
    upstreams: Upstreams, make_proxy: ProxyFactory
) -> None:
    gpu, cpu = upstreams
    proxy = await make_proxy(url_of(gpu), url_of(cpu), failback="manual")
    proxy.workspace.failover()
    base = public_url(proxy)
    async with aiohttp.ClientSession() as s:
        evil = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
        async with s.post(base / "__dumont" / "failback", headers=evil) as r:
            assert r.status == 403
        assert proxy.workspace.machine.active == "standby"
        same = {"Origin": str(base), "Sec-Fetch-Site": "same-origin"}
        async with s.post(base / "__dumont" / "failback", headers=same) as r:
            assert r.status in (200, 202, 204), await r.text()
    assert proxy.workspace.machine.active == "primary"
