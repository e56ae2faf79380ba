"""A real code-server workbench in Debian's Chromium through our proxy over HTTP/2 (issue 19):
the page, its scripts and its WebSockets (RFC 8441) all travel in HTTP/2 connections."""

from __future__ import annotations

from pathlib import Path

import pytest
from yarl import URL

from proxy.config import HealthConfig
from tests.support.browser import chromium, open_workbench
from tests.support.codeserver import start_code_server_async
from tests.support.h2client import tls_settings
from tests.support.ports import free_port
from tests.support.proxies import ProxyFactory

pytestmark = [pytest.mark.codeserver, pytest.mark.browser, pytest.mark.slow]


@pytest.mark.timeout(300)
async def test_workbench_loads_over_http2_with_its_websockets_inside(
    make_proxy: ProxyFactory, certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    server = await start_code_server_async(tmp_path / "cs", "pw-h2")
    (server.workspace / "hello.txt").write_text("hello over h2\n")
    try:
        dead = URL(f"http://127.0.0.1:{free_port()}")  # no standby: every request to the primary
        # Health checks that a busy machine cannot fail: this test is about the protocol, and a
        # code-server slow to answer /healthz under load would send the browser to the
        # transition page.
        health = HealthConfig(interval=0.5, timeout=3.0, fall=10, rise=1, warmup_path=None)
        proxy = await make_proxy(
            URL(server.url), dead, tls=tls_settings(certificate), health=health
        )
        assert proxy.public is not None
        url = f"https://127.0.0.1:{proxy.public.address.port}/"
        async with chromium() as browser:
            context = await browser.new_context(ignore_https_errors=True)
            page = await context.new_page()
            await open_workbench(page, url, server.password)
            protocol = await page.evaluate(
                "performance.getEntriesByType('navigation')[0].nextHopProtocol"
            )
            await context.close()
        assert protocol == "h2"
        counts = proxy.public.context.protocols
        assert counts.requests["h2"] > 20  # the workbench's documents, scripts, styles
        # No HTTP/1.1 connection at all: the WebSockets went inside HTTP/2 too (RFC 8441).
        assert counts.connections["h1"] == 0
        assert counts.goaways == {}
    finally:
        server.stop()
